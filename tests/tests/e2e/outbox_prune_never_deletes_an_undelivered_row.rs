//! `bridge outbox prune`: with capture stopped, rows whose `occurred_at` is years old survive
//! (the slot has not confirmed them: the run deletes nothing and says why); once capture has
//! delivered them they are deleted, and a row younger than the retention stays.

use harness::process;
use harness::stack::Stack;

async fn outbox_rows(stack: &Stack) -> anyhow::Result<i64> {
    let pg = stack.pg.client().await?;
    Ok(pg.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_rows_go_only_once_the_slot_confirmed_them() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let pg = stack.pg.client().await?;
    for n in 0..3 {
        pg.execute(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version, occurred_at)
             VALUES (gen_random_uuid(), 'Order', $1, 'OrderPlaced', '{}', 1, now() - interval '3 years')",
            &[&format!("old-{n}")],
        )
        .await?;
    }
    let prune = ["outbox", "prune", "--older-than", "1h", "--wait-secs", "2"];

    // Capture has not run: nothing is provably delivered, nothing is deleted.
    let (code, out, err) = process::run("bridge", &prune, &stack.env()).await?;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("has not confirmed") && err.contains("nothing was deleted"),
        "{err}"
    );
    assert_eq!(outbox_rows(&stack).await?, 3);

    // Delivered: the old rows go; a row younger than the retention stays.
    let mut capture = stack.spawn_capture(&[]).await?;
    pg.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version)
         VALUES (gen_random_uuid(), 'Order', 'fresh', 'OrderPlaced', '{}', 1)",
        &[],
    )
    .await?;
    stack.wait_drained("outbox_bridge", &capture).await?;
    let out = stack
        .run_ok(
            "bridge",
            &["outbox", "prune", "--older-than", "1h", "--batch", "2"],
        )
        .await?;
    assert!(
        out.contains("pruned 3 row(s)") && out.contains("in 2 batch(es)"),
        "{out}"
    );
    assert_eq!(outbox_rows(&stack).await?, 1);
    let fresh: String = pg.query_one("SELECT aggregateid FROM outbox", &[]).await?.get(0);
    assert_eq!(fresh, "fresh");

    // Stopped again: an old-dated row committed now stays until capture delivers it.
    capture.kill9().await?;
    pg.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version, occurred_at)
         VALUES (gen_random_uuid(), 'Order', 'late', 'OrderPlaced', '{}', 1, now() - interval '3 years')",
        &[],
    )
    .await?;
    let (code, out, err) = process::run("bridge", &prune, &stack.env()).await?;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert_eq!(outbox_rows(&stack).await?, 2);
    Ok(())
}

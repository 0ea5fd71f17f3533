//! Bad HTTP input gets a 4xx with a JSON body and writes nothing; a bad flag exits with a
//! message naming it.

use harness::process;
use harness::stack::Stack;
use serde_json::{json, Value};

async fn counts(stack: &Stack) -> anyhow::Result<(i64, i64, i64)> {
    let c = stack.pg.client().await?;
    let n = |sql: &'static str| {
        let c = &c;
        async move { Ok::<i64, anyhow::Error>(c.query_one(sql, &[]).await?.get(0)) }
    };
    Ok((
        n("SELECT count(*) FROM customers").await?,
        n("SELECT count(*) FROM orders").await?,
        n("SELECT count(*) FROM outbox").await?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_requests_get_json_4xx_and_change_nothing() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (_sim, base) = stack.spawn_legacy_sim().await?;
    // A fresh connection per request: after answering 413 the server closes the connection
    // without reading the rest of the body (standard HTTP), and a pooled connection reused
    // for the next case would fail on the client's side, not the server's.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let customer: Value = http
        .post(format!("{base}/customers"))
        .json(&json!({"name": "Ada", "credit_limit": 100}))
        .send()
        .await?
        .json()
        .await?;
    let customer_id = customer["customer_id"].as_str().unwrap_or_default().to_owned();
    let before = counts(&stack).await?;

    let huge = "x".repeat(200 * 1024);
    let cases: Vec<(&str, String, Option<String>, u16)> = vec![
        ("POST", "/customers".into(), Some("{not json".into()), 400),
        (
            "POST",
            "/customers".into(),
            Some(json!({"credit_limit": 5}).to_string()),
            422,
        ),
        (
            "POST",
            "/customers".into(),
            Some(json!({"name": "Bo", "credit_limit": -5}).to_string()),
            422,
        ),
        (
            "POST",
            "/customers".into(),
            Some(json!({"name": "", "credit_limit": 5}).to_string()),
            422,
        ),
        (
            "POST",
            "/customers".into(),
            Some(json!({"name": "Bo", "credit_limit": "lots"}).to_string()),
            422,
        ),
        (
            "POST",
            "/customers".into(),
            Some(json!({"name": huge, "credit_limit": 5}).to_string()),
            413,
        ),
        (
            "POST",
            "/orders".into(),
            Some(json!({"customer_id": customer_id, "order_total": 0}).to_string()),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            Some(json!({"customer_id": customer_id, "order_total": -3}).to_string()),
            422,
        ),
        (
            "POST",
            "/orders".into(),
            Some(
                json!({"customer_id": "00000000-0000-0000-0000-000000000000", "order_total": 3}).to_string(),
            ),
            404,
        ),
        (
            "POST",
            "/orders".into(),
            Some(json!({"customer_id": "nope", "order_total": 3}).to_string()),
            422,
        ),
        ("GET", "/customers/not-a-uuid".into(), None, 400),
        (
            "GET",
            "/orders/00000000-0000-0000-0000-000000000000".into(),
            None,
            404,
        ),
        (
            "POST",
            "/orders/00000000-0000-0000-0000-000000000000/cancel".into(),
            None,
            404,
        ),
        ("GET", "/no/such/route".into(), None, 404),
    ];
    for (method, path, body, status) in cases {
        let mut req = http.request(method.parse()?, format!("{base}{path}"));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let body: Value = resp
            .json()
            .await
            .map_err(|e| anyhow::anyhow!("{method} {path}: body is not JSON: {e}"))?;
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{method} {path}: {body}"
        );
    }
    // Wrong content type.
    let resp = http
        .post(format!("{base}/customers"))
        .body(r#"{"name":"Bo","credit_limit":1}"#)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 415);
    assert!(resp.json::<Value>().await?["error"].is_string());

    assert_eq!(counts(&stack).await?, before, "bad input wrote nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_exit_with_a_message_naming_them() -> anyhow::Result<()> {
    let env = vec![(
        "DATABASE_URL".to_owned(),
        "postgres://u:topsecret@127.0.0.1:1/db".to_owned(),
    )];
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "bridge",
            &["capture", "--max-inflight-batches", "0"],
            "--max-inflight-batches",
        ),
        ("bridge", &["capture", "--tables", "public.out box"], "--tables"),
        (
            "bridge",
            &["capture", "--partition-key", "public.outbox=random"],
            "--partition-key",
        ),
        ("bridge", &["capture", "--slot", "Bad-Slot"], "--slot"),
        ("bridge", &["setup", "--shards", "0"], "--shards"),
        ("legacy-sim", &["load", "--customers", "many"], "--customers"),
    ];
    for (bin, args, flag) in cases {
        let (code, out, err) = process::run(bin, args, &env).await?;
        assert_eq!(code, Some(2), "{bin} {args:?}: {out}{err}");
        assert!(err.contains(flag), "{bin} {args:?} does not name {flag}: {err}");
    }
    // Durations: one syntax everywhere, bounds and AWS' whole units named; a renamed flag's old
    // environment variable is still read (a value out of range shows it was).
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let durations: [Case; 5] = [
        (
            "bridge",
            &["relay", "--lease-duration", "1s"],
            &[],
            &["--lease-duration", "between 2s and 1h"],
        ),
        (
            "bridge",
            &["setup", "--archive-retention", "36h"],
            &[],
            &["--archive-retention", "whole number of days"],
        ),
        (
            "shipping",
            &["run", "--wait-time", "21s"],
            &[],
            &["--wait-time", "between 0s and 20s"],
        ),
        (
            "shipping",
            &["run", "--poll-interval", "2x"],
            &[],
            &["--poll-interval", "unknown unit `x`"],
        ),
        (
            "bridge",
            &["capture"],
            &[("BRIDGE_STALL_TIMEOUT_SECS", "0")],
            &["--stall-timeout", "`0`: must be between 1s and"],
        ),
    ];
    for (bin, args, vars, says) in durations {
        let mut with = env.clone();
        with.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let (code, out, err) = process::run(bin, args, &with).await?;
        assert_eq!(code, Some(2), "{bin} {args:?} {vars:?}: {out}{err}");
        for said in says {
            assert!(
                err.contains(said),
                "{bin} {args:?} {vars:?} does not say {said}: {err}"
            );
        }
    }
    // Checked after parsing: the listen address, and a database URL clap cannot judge.
    let (code, _, err) = process::run("bridge", &["capture", "--metrics-listen", "nowhere"], &env).await?;
    assert_eq!(code, Some(1));
    assert!(err.contains("--metrics-listen"), "{err}");
    let (code, _, err) = process::run(
        "bridge",
        &[
            "capture",
            "--database-url",
            "postgres://u:topsecret@h:notaport/db",
        ],
        &[],
    )
    .await?;
    assert_eq!(code, Some(1));
    assert!(err.contains("--database-url"), "{err}");
    assert!(
        !err.contains("topsecret"),
        "the password stays out of errors: {err}"
    );
    Ok(())
}

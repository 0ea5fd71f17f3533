//! deploy/cloudformation: the templates declare what `bridge setup` and `shipping setup` create
//! (same names, same settings), and the pipeline runs on the resources of the two stacks,
//! deployed into the emulator's CloudFormation, with neither setup command run.

use std::time::Duration;

use harness::cloudformation::{deploy, disagreements, template};
use harness::moto::Moto;
use harness::process::{self, Proc};
use harness::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_templates_declare_what_setup_creates() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    for (bin, args) in [("bridge", ["setup"]), ("shipping", ["setup"])] {
        let (code, out, err) = process::run(bin, &args, &moto.env()).await?;
        assert_eq!(code, Some(0), "{bin} setup: {out}{err}");
    }
    let problems = disagreements(&moto.env(), &moto.endpoint).await?;
    assert_eq!(problems, serde_json::json!([]), "template and setup disagree");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_projection_through_the_stacks_resources() -> anyhow::Result<()> {
    // The template's default stream name: the processes use the stack's names as they are.
    let stack = Stack::start_bare("legacy-cdc").await?;
    let env = stack.env();
    let endpoint = stack.moto.endpoint.clone();
    let bridge = deploy(
        &env,
        &endpoint,
        &template("outbox-bridge.yaml"),
        "outbox-bridge",
        &[
            ("ImageUri", "outbox-bridge:test"),
            (
                "DatabaseUrlSecretArn",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:monolith-database-url",
            ),
            ("VpcId", "vpc-12345678"),
            ("SubnetIds", "subnet-12345678"),
            ("ShardCount", "2"),
        ],
    )
    .await?;
    assert_eq!(bridge["StreamName"], "legacy-cdc", "{bridge}");
    assert_eq!(bridge["EventBusName"], "legacy-monolith", "{bridge}");
    let shipping = deploy(
        &env,
        &endpoint,
        &template("shipping.yaml"),
        "shipping",
        &[
            ("ImageUri", "outbox-bridge:test"),
            ("SubnetIds", "subnet-12345678"),
        ],
    )
    .await?;
    assert_eq!(
        shipping["RuleName"], "shipping-events-from-legacy-monolith",
        "{shipping}"
    );

    let pipeline = Proc::spawn("bridge", &["run", "--lease-duration-secs", "3"], &env)?;
    stack.wait_slot_active("outbox_bridge", &pipeline).await?;
    let consumer = Proc::spawn("shipping", &["run", "--wait-seconds", "1"], &env)?;
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "3",
                "--orders",
                "12",
                "--cancel-ratio",
                "0.3",
                "--progress",
                "never",
            ],
        )
        .await?;
    let report =
        harness::shipping::wait_consistent(&stack, &[&pipeline, &consumer], Duration::from_secs(180)).await?;
    assert!(report.exact(), "{report:?}");
    assert!(report.customers >= 3, "{report:?}");
    Ok(())
}

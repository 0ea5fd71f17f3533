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
    for name in ["outbox-bridge.yaml", "shipping.yaml"] {
        let left_out = harness::cloudformation::unnamed(&template(name)).await?;
        assert_eq!(
            left_out,
            serde_json::json!([]),
            "{name}: resources without an output"
        );
    }
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

/// The image and the compose file, as far as they can be checked without a container engine:
/// base images pinned by digest, a locked build, a non-root user, a health check; published
/// ports on loopback only.
#[test]
fn the_image_and_the_compose_file_are_locked_down() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    let froms: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(!froms.is_empty());
    for from in &froms {
        assert!(from.contains("@sha256:"), "not pinned by digest: {from}");
    }
    assert!(
        dockerfile.contains("cargo build --release --locked"),
        "{dockerfile}"
    );
    let user = dockerfile.lines().rev().find(|l| l.starts_with("USER "));
    assert!(
        user.is_some_and(|u| !u.contains("root") && u.trim() != "USER 0"),
        "{user:?}"
    );
    assert!(dockerfile.lines().any(|l| l.starts_with("HEALTHCHECK ")));
    let compose = std::fs::read_to_string(root.join("docker-compose.yml"))?;
    for line in compose.lines().filter(|l| l.trim_start().starts_with("ports:")) {
        for mapping in line.split('"').skip(1).step_by(2) {
            assert!(
                mapping.starts_with("127.0.0.1:"),
                "published beyond loopback: {mapping}"
            );
        }
    }
    Ok(())
}

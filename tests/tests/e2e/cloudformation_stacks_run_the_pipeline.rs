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
/// base images pinned by digest, a locked and cached build of stripped binaries, a non-root
/// user, each service's own health check; published ports on loopback only.
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
    // Dependencies cached apart from the sources (an edit does not rebuild the AWS SDK), and
    // stripped binaries.
    assert!(
        dockerfile.contains("--mount=type=cache,target=/src/target"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"),
        "{dockerfile}"
    );
    // One image, three kinds of process: no image-wide check; each long-running service of the
    // compose file checks its own process with its own binary.
    assert!(!dockerfile.lines().any(|l| l.starts_with("HEALTHCHECK ")));
    let compose = std::fs::read_to_string(root.join("docker-compose.yml"))?;
    for (service, binary) in [
        ("capture", "bridge"),
        ("relay", "bridge"),
        ("shipping", "shipping"),
        ("legacy-sim", "legacy-sim"),
    ] {
        let block = compose
            .split(&format!("\n  {service}:\n"))
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap_or_default();
        assert!(
            block.contains(&format!("test: [\"CMD\", \"{binary}\", \"healthcheck\"")),
            "{service}: {block}"
        );
    }
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

/// What an AWS engineer expects of a stack, checked on both templates: an alarm on each thing
/// AWS measures without us (the stream's iterator age, the DLQs' depth, the rule's failed and
/// dead-lettered deliveries, running tasks) and on what only the processes measure (replication
/// lag, WAL retained, events parked — published as embedded metric format lines); a deployment
/// circuit breaker that rolls back on every service; the stateful resources kept when the stack
/// goes (and their tables recoverable to a point in time); shipping's stream publisher as
/// exactly one task; and each container checking its own process's liveness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_templates_deploy_as_aws_operators_expect() -> anyhow::Result<()> {
    use harness::cloudformation::{read, template};
    let bridge = read(&template("outbox-bridge.yaml")).await?;
    let shipping = read(&template("shipping.yaml")).await?;
    let of_type = |t: &serde_json::Value, kind: &str| -> Vec<(String, serde_json::Value)> {
        t["Resources"]
            .as_object()
            .map(|r| {
                r.iter()
                    .filter(|(_, v)| v["Type"] == kind)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let metrics = |t: &serde_json::Value| -> Vec<String> {
        of_type(t, "AWS::CloudWatch::Alarm")
            .iter()
            .map(|(_, a)| {
                let p = &a["Properties"];
                assert!(
                    p["AlarmActions"].is_object(),
                    "notifies the topic when one is given: {a}"
                );
                format!(
                    "{}/{}",
                    p["Namespace"].as_str().unwrap_or(""),
                    p["MetricName"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let bridge_metrics = metrics(&bridge);
    for expected in [
        "AWS/Kinesis/GetRecords.IteratorAgeMilliseconds",
        "AWS/SQS/ApproximateNumberOfMessagesVisible",
        "ECS/ContainerInsights/RunningTaskCount",
        "OutboxBridge/ReplicationLagBytes",
        "OutboxBridge/RetainedWalBytes",
        "OutboxBridge/EventsParked",
    ] {
        assert!(
            bridge_metrics.iter().any(|m| m == expected),
            "{expected}: {bridge_metrics:?}"
        );
    }
    let shipping_metrics = metrics(&shipping);
    for expected in [
        "AWS/SQS/ApproximateNumberOfMessagesVisible",
        "AWS/Events/FailedInvocations",
        "AWS/Events/DeadLetterInvocations",
        "ECS/ContainerInsights/RunningTaskCount",
        "OutboxBridge/EventsParked",
    ] {
        assert!(
            shipping_metrics.iter().any(|m| m == expected),
            "{expected}: {shipping_metrics:?}"
        );
    }
    for t in [&bridge, &shipping] {
        assert!(t["Parameters"]["AlarmTopicArn"].is_object());
        for (name, service) in of_type(t, "AWS::ECS::Service") {
            let breaker = &service["Properties"]["DeploymentConfiguration"]["DeploymentCircuitBreaker"];
            assert_eq!(breaker["Enable"], true, "{name}");
            assert_eq!(breaker["Rollback"], true, "{name}");
        }
        for kind in [
            "AWS::DynamoDB::Table",
            "AWS::SQS::Queue",
            "AWS::Kinesis::Stream",
            "AWS::S3::Bucket",
        ] {
            for (name, resource) in of_type(t, kind) {
                assert_eq!(resource["DeletionPolicy"], "Retain", "{name}");
                assert_eq!(resource["UpdateReplacePolicy"], "Retain", "{name}");
                if kind == "AWS::DynamoDB::Table" {
                    assert_eq!(
                        resource["Properties"]["PointInTimeRecoverySpecification"]
                            ["PointInTimeRecoveryEnabled"],
                        true,
                        "{name}"
                    );
                }
            }
        }
        for (name, task) in of_type(t, "AWS::ECS::TaskDefinition") {
            for container in task["Properties"]["ContainerDefinitions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let command = container["Command"].as_array().cloned().unwrap_or_default();
                let check = container["HealthCheck"]["Command"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                // The check is the container's own binary asking its own process.
                assert_eq!(check.get(1), command.first(), "{name}: {check:?} for {command:?}");
                assert_eq!(
                    check.get(2).and_then(|v| v.as_str()),
                    Some("healthcheck"),
                    "{name}"
                );
            }
        }
    }
    // Shipping's stream publisher: its own service, one task, never two at once.
    let services = of_type(&shipping, "AWS::ECS::Service");
    let publisher = services
        .iter()
        .find(|(_, s)| s["Properties"]["ServiceName"] == "shipping-publisher")
        .map(|(_, s)| s["Properties"].clone())
        .ok_or_else(|| anyhow::anyhow!("no publisher service"))?;
    assert_eq!(publisher["DesiredCount"], 1);
    assert_eq!(publisher["DeploymentConfiguration"]["MaximumPercent"], 100);
    let tasks = of_type(&shipping, "AWS::ECS::TaskDefinition");
    let components = |task: &str| -> Option<String> {
        tasks.iter().find(|(n, _)| n == task).and_then(|(_, t)| {
            t["Properties"]["ContainerDefinitions"][0]["Environment"]
                .as_array()?
                .iter()
                .find(|e| e["Name"] == "SHIPPING_COMPONENTS")
                .and_then(|e| e["Value"].as_str().map(str::to_owned))
        })
    };
    assert_eq!(components("Task").as_deref(), Some("consumer"));
    assert_eq!(components("PublisherTask").as_deref(), Some("publisher"));
    Ok(())
}

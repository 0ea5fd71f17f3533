//! JSON Schema contracts (`[contracts]` in the configuration file): every event the monolith's
//! load generator and shipping produce meets the schemas the project ships, and an event that
//! breaks its contract is parked with the schema's error while the rest of its page flows.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::stack::Stack;
use harness::{bus, shipping};
use serde_json::{json, Value};

fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

/// Every shipped schema, compiled, by `<Source>/<DetailType>`.
fn compiled() -> anyhow::Result<HashMap<String, jsonschema::Validator>> {
    let mut out = HashMap::new();
    for source in std::fs::read_dir(schemas())? {
        let source = source?.path();
        for file in std::fs::read_dir(&source)? {
            let file = file?.path();
            let document: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
            let validator = jsonschema::draft202012::new(&document)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let text =
                |s: Option<&std::ffi::OsStr>| s.and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            // The directory is the source (`legacy.monolith`: its dot is not an extension).
            out.insert(
                format!("{}/{}", text(source.file_name()), text(file.file_stem())),
                validator,
            );
        }
    }
    Ok(out)
}

fn config(dir: &Path, require: bool) -> anyhow::Result<String> {
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "[contracts]\nschemas = \"{}\"\nrequire_schema = {require}\n",
            schemas().display()
        ),
    )?;
    Ok(path.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_the_monolith_and_shipping_meets_its_contract() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack.run_ok("shipping", &["setup"]).await?;
    let mut everything = bus::subscribe(
        &sdk,
        "legacy-monolith",
        "every-event",
        &json!({"source": ["legacy.monolith", "shipping"]}),
    )
    .await?;
    let dir = tempfile::tempdir()?;
    // Every event must have a contract: one without would be parked.
    let config = config(dir.path(), true)?;
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let bridge = stack.spawn(
        "bridge",
        &[
            "run",
            "--config",
            &config,
            "--lease-duration",
            "3s",
            "--metrics-listen",
            &listen,
        ],
    )?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    // shipping checks its own events against the same contracts before it publishes them.
    let service = stack.spawn("shipping", &["run", "--config", &config, "--wait-seconds", "2"])?;
    // Small credit limits make some orders REJECTED; cancellations release credit.
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "6",
                "--orders",
                "36",
                "--concurrency",
                "3",
                "--cancel-ratio",
                "0.3",
                "--seed",
                "11",
                "--progress",
                "never",
            ],
        )
        .await?;
    let report = shipping::wait_consistent(&stack, &[&bridge, &service], Duration::from_secs(240)).await?;
    anyhow::ensure!(report.exact(), "{report}");

    let outbox: HashSet<String> = stack.outbox_ids().await?.into_iter().collect();
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let shipments: HashSet<String> = shipping::scan(&dynamo, "shipping-outbox")
        .await?
        .iter()
        .map(|i| shipping::text(i, "event_id"))
        .collect();
    let want: HashSet<String> = outbox.union(&shipments).cloned().collect();
    everything
        .until_all(&want, Duration::from_secs(120), || {
            format!("{}\n{}", bridge.output(), service.output())
        })
        .await?;

    // Checked again here with the schemas read afresh, outside the bridge: every event on the
    // bus, shipping's (which the relay never sees) included.
    let contracts = compiled()?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, event) in everything.by_event_id().values() {
        let (source, detail_type) = (
            event["source"].as_str().unwrap_or_default(),
            event["detail-type"].as_str().unwrap_or_default(),
        );
        let Some(schema) = contracts.get(&format!("{source}/{detail_type}")) else {
            anyhow::bail!("no contract for {source} {detail_type}: {event}");
        };
        let errors: Vec<String> = schema
            .iter_errors(&event["detail"]["data"])
            .map(|e| e.to_string())
            .collect();
        anyhow::ensure!(
            errors.is_empty(),
            "{source} {detail_type} breaks its contract: {errors:?}\n{event}"
        );
        *seen.entry(format!("{source}/{detail_type}")).or_default() += 1;
    }
    for kind in [
        "legacy.monolith/CustomerCreated",
        "legacy.monolith/CreditReserved",
        "legacy.monolith/CreditReleased",
        "legacy.monolith/OrderPlaced",
        "legacy.monolith/OrderRejected",
        "legacy.monolith/OrderCancelled",
        "shipping/ShipmentScheduled",
    ] {
        anyhow::ensure!(seen.contains_key(kind), "no {kind} event in the run: {seen:?}");
    }
    let parked = harness::metrics::scrape_sum(port, "bridge_dead_letters_total").await?;
    anyhow::ensure!(parked == 0.0, "{parked} records parked:\n{}", bridge.output());

    // The Schema Registry documents `bridge schemas export` writes describe these very events,
    // as AWS delivers them, and as a draft 4 validator reads them.
    let out = dir.path().join("registry");
    let out_arg = out.to_string_lossy().into_owned();
    stack
        .run_ok(
            "bridge",
            &[
                "--config",
                &config,
                "schemas",
                "export",
                "--format",
                "eventbridge",
                "--content",
                "jsonschema-draft4",
                "--out",
                &out_arg,
            ],
        )
        .await?;
    let mut documents = HashMap::new();
    for file in std::fs::read_dir(&out)? {
        let file = file?.path();
        let document: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let validator = jsonschema::draft4::new(&document).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        documents.insert(name, validator);
    }
    anyhow::ensure!(
        documents.len() == contracts.len(),
        "{} documents for {} contracts",
        documents.len(),
        contracts.len()
    );
    for (_, event) in everything.by_event_id().values() {
        let name = format!(
            "{}@{}",
            event["source"].as_str().unwrap_or_default(),
            event["detail-type"].as_str().unwrap_or_default()
        );
        let document = documents
            .get(&name)
            .ok_or_else(|| anyhow::anyhow!("no registry document {name}"))?;
        let errors: Vec<String> = document.iter_errors(event).map(|e| e.to_string()).collect();
        anyhow::ensure!(
            errors.is_empty(),
            "{name}: the event breaks its registry document: {errors:?}\n{event}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_breaks_its_contract_is_parked_and_its_page_flows() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    let mut events = bus::monolith_events(&sdk, "customer-events").await?;
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), false)?;
    let capture = stack.spawn_capture(&[]).await?;
    let relay = stack.spawn(
        "bridge",
        &["relay", "--config", &config, "--lease-duration", "3s"],
    )?;

    // One transaction, so one page: three good customers, one whose credit limit is text, and
    // an event no contract covers (it passes: require_schema is off).
    let mut pg = stack.pg.client().await?;
    let tx = pg.transaction().await?;
    let customer = |n: u32, limit: Value| {
        json!({"customer_id": format!("9c3c7a4e-0000-4000-8000-{n:012}"), "name": format!("c{n}"),
            "credit_limit": limit, "credit_reserved": 0, "version": 1})
    };
    let id = |n: u32| format!("9d3c7a4e-0000-4000-8000-{n:012}");
    let rows = [
        (id(1), "CustomerCreated", customer(1, json!(100))),
        (id(2), "CustomerCreated", customer(2, json!("lots"))),
        (id(3), "CustomerCreated", customer(3, json!(5.5))),
        (id(4), "LoyaltyPointsGranted", json!({"points": 3})),
        (id(5), "CustomerCreated", customer(5, json!(0))),
    ];
    for (event_id, kind, payload) in &rows {
        tx.execute(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, aggregate_version)
             VALUES ($1::text::uuid, 'Customer', $1, $2, $3::text::jsonb, 1)",
            &[event_id, kind, &payload.to_string()],
        )
        .await?;
    }
    tx.commit().await?;

    let good: HashSet<String> = [id(1), id(3), id(4), id(5)].into_iter().collect();
    events
        .until_all(&good, Duration::from_secs(90), || {
            format!("{}\n{}", relay.output(), capture.output())
        })
        .await?;
    anyhow::ensure!(
        !events.by_event_id().contains_key(&id(2)),
        "the broken event was published"
    );
    let parked = harness::dlq::receive(&sdk, "bridge-dlq", 1).await?;
    let reasons: Vec<&str> = parked.iter().filter_map(|p| p["reason"].as_str()).collect();
    anyhow::ensure!(reasons.len() == 1, "{reasons:?}");
    let reason = reasons[0];
    for needle in [
        id(2).as_str(),
        "CustomerCreated.json",
        "at `/credit_limit`",
        "\"lots\"",
    ] {
        anyhow::ensure!(reason.contains(needle), "no {needle:?} in the reason: {reason}");
    }
    Ok(())
}

/// shipping checks its own events too (`shipping --config` with `[contracts]`): a shipment
/// event that breaks its contract is parked in the publisher's dead-letter queue with the
/// schema's error; the projection is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_parks_its_own_event_that_breaks_its_contract() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let sdk = stack.moto.sdk_config().await;
    stack.run_ok("shipping", &["setup"]).await?;
    let dir = tempfile::tempdir()?;
    // A stricter ShipmentScheduled than shipping writes: it demands a carrier.
    let strict = dir.path().join("schemas/shipping");
    std::fs::create_dir_all(&strict)?;
    std::fs::write(
        strict.join("ShipmentScheduled.json"),
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["order_id", "carrier"]}"#,
    )?;
    let config = dir.path().join("shipping.toml");
    std::fs::write(&config, "[contracts]\nschemas = \"schemas\"\n")?;
    let config = config.to_string_lossy().into_owned();
    let bridge = stack.spawn("bridge", &["run", "--lease-duration", "3s"])?;
    stack.wait_slot_active("outbox_bridge", &bridge).await?;
    let service = stack.spawn("shipping", &["run", "--config", &config, "--wait-seconds", "2"])?;
    stack
        .run_ok(
            "legacy-sim",
            &[
                "load",
                "--customers",
                "2",
                "--orders",
                "4",
                "--concurrency",
                "1",
                "--cancel-ratio",
                "0",
                "--seed",
                "3",
                "--progress",
                "never",
            ],
        )
        .await?;
    let report = shipping::wait_consistent(&stack, &[&bridge, &service], Duration::from_secs(180)).await?;
    anyhow::ensure!(report.exact(), "{report}");
    anyhow::ensure!(
        report.approved_orders > 0,
        "no approved order, so no shipment event: {report}"
    );
    let parked = harness::dlq::receive(&sdk, "shipping-outbox-dlq", report.approved_orders).await?;
    let reasons: Vec<&str> = parked.iter().filter_map(|p| p["reason"].as_str()).collect();
    anyhow::ensure!(
        reasons.len() == report.approved_orders,
        "{} parked for {} approved orders: {reasons:?}\n{}",
        reasons.len(),
        report.approved_orders,
        service.output()
    );
    for reason in &reasons {
        for needle in ["ShipmentScheduled", "ShipmentScheduled.json", "carrier"] {
            anyhow::ensure!(reason.contains(needle), "no {needle:?} in: {reason}");
        }
    }
    Ok(())
}

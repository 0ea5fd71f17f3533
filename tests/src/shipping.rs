//! The shipping service as tests and the demo see it: its tables read back, and the
//! consistency report — the monolith's state against the microservice's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

pub type Item = HashMap<String, AttributeValue>;

/// Every item of a DynamoDB table (the SDK's paginator follows `LastEvaluatedKey`).
pub async fn scan(dynamo: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<Vec<Item>> {
    dynamo
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "scan of {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )
        })
}

/// How many items a DynamoDB table holds (a counting scan: no items travel).
pub async fn count(dynamo: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<i64> {
    let mut pages = dynamo
        .scan()
        .table_name(table)
        .consistent_read(true)
        .select(aws_sdk_dynamodb::types::Select::Count)
        .into_paginator()
        .send();
    let mut total = 0i64;
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "count of {table}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )
        })?;
        total += i64::from(page.count);
    }
    Ok(total)
}

pub fn text(item: &Item, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) | Some(AttributeValue::N(s)) => s.clone(),
        _ => String::new(),
    }
}

/// An amount in cents, however it is spelled ("100", "100.0", "100.00").
fn cents(text: &str) -> Option<i64> {
    text.parse::<f64>().ok().map(|v| (v * 100.0).round() as i64)
}

/// The monolith against the shipping service, after the pipeline drained.
#[derive(Debug, Default)]
pub struct Consistency {
    pub customers: usize,
    /// Customers whose projection is missing or differs (name, limit, reserved, version).
    pub customer_mismatches: Vec<String>,
    /// Projected customers the monolith does not have.
    pub unknown_customers: Vec<String>,
    /// Orders APPROVED and not cancelled.
    pub approved_orders: usize,
    /// Approved orders without a live (SCHEDULED) shipment.
    pub missing_shipments: Vec<String>,
    /// Live shipments whose order is not approved (rejected, cancelled or unknown).
    pub extra_shipments: Vec<String>,
}

impl Consistency {
    pub fn exact(&self) -> bool {
        self.customer_mismatches.is_empty()
            && self.unknown_customers.is_empty()
            && self.missing_shipments.is_empty()
            && self.extra_shipments.is_empty()
    }

    /// The comparison without the differences on aggregates in `excused` (a failover's
    /// phantoms: events the projection applied that the monolith no longer has), and how many
    /// those were.
    pub fn excusing(mut self, excused: &std::collections::HashSet<String>) -> (Self, usize) {
        let mut left_out = 0;
        for ids in [
            &mut self.customer_mismatches,
            &mut self.unknown_customers,
            &mut self.missing_shipments,
            &mut self.extra_shipments,
        ] {
            let before = ids.len();
            ids.retain(|id| !excused.contains(id));
            left_out += before - ids.len();
        }
        (self, left_out)
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "customers {} ({} differ, {} unknown); approved orders {} ({} without shipment, {} shipments too many)",
            self.customers,
            self.customer_mismatches.len(),
            self.unknown_customers.len(),
            self.approved_orders,
            self.missing_shipments.len(),
            self.extra_shipments.len()
        )
    }
}

/// Compares the monolith's customers and orders with the projection and the shipments.
pub async fn check(
    pg: &tokio_postgres::Client,
    dynamo: &aws_sdk_dynamodb::Client,
    customers_table: &str,
    shipments_table: &str,
) -> anyhow::Result<Consistency> {
    let mut report = Consistency::default();
    let rows = pg
        .query(
            "SELECT id::text, name, credit_limit::text, credit_reserved::text, version FROM customers",
            &[],
        )
        .await?;
    let monolith: BTreeMap<String, (String, Option<i64>, Option<i64>, i64)> = rows
        .iter()
        .map(|r| {
            let limit: String = r.get(2);
            let reserved: String = r.get(3);
            (r.get(0), (r.get(1), cents(&limit), cents(&reserved), r.get(4)))
        })
        .collect();
    report.customers = monolith.len();
    let projected: BTreeMap<String, (String, Option<i64>, Option<i64>, i64)> = scan(dynamo, customers_table)
        .await?
        .iter()
        .map(|i| {
            (
                text(i, "customer_id"),
                (
                    text(i, "name"),
                    cents(&text(i, "credit_limit")),
                    cents(&text(i, "credit_reserved")),
                    text(i, "aggregate_version").parse().unwrap_or(-1),
                ),
            )
        })
        .collect();
    for (id, state) in &monolith {
        if projected.get(id) != Some(state) {
            report.customer_mismatches.push(id.clone());
        }
    }
    report.unknown_customers = projected
        .keys()
        .filter(|id| !monolith.contains_key(*id))
        .cloned()
        .collect();

    let approved: BTreeSet<String> = pg
        .query("SELECT id::text FROM orders WHERE state = 'APPROVED'", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    report.approved_orders = approved.len();
    let live: BTreeSet<String> = scan(dynamo, shipments_table)
        .await?
        .iter()
        .filter(|i| text(i, "state") == "SCHEDULED")
        .map(|i| text(i, "order_id"))
        .collect();
    report.missing_shipments = approved.difference(&live).cloned().collect();
    report.extra_shipments = live.difference(&approved).cloned().collect();
    Ok(report)
}

/// The monolith event types the shipping service's rule routes to it (`shipping setup`).
pub const SUBSCRIBED_TYPES: [&str; 6] = [
    "CustomerCreated",
    "CreditReserved",
    "CreditReleased",
    "OrderPlaced",
    "OrderRejected",
    "OrderCancelled",
];

/// Waits until the shipping service holds exactly the monolith's state and its inbox holds
/// every monolith event routed to it; fails early if one of `procs` died.
pub async fn wait_consistent(
    stack: &crate::stack::Stack,
    procs: &[&crate::process::Proc],
    timeout: std::time::Duration,
) -> anyhow::Result<Consistency> {
    wait_consistent_but(stack, procs, timeout, 0).await
}

/// [`wait_consistent`], knowing that `parked` of the events routed to shipping were parked
/// (content it cannot store) and so never reach its inbox.
pub async fn wait_consistent_but(
    stack: &crate::stack::Stack,
    procs: &[&crate::process::Proc],
    timeout: std::time::Duration,
    parked: usize,
) -> anyhow::Result<Consistency> {
    let none = std::collections::HashSet::new();
    Ok(wait_consistent_excusing(stack, procs, timeout, parked, &none)
        .await?
        .0)
}

/// [`wait_consistent_but`], leaving out the differences on aggregates in `excused`
/// ([`Consistency::excusing`]); returns the comparison and how many differences it left out.
pub async fn wait_consistent_excusing(
    stack: &crate::stack::Stack,
    procs: &[&crate::process::Proc],
    timeout: std::time::Duration,
    parked: usize,
    excused: &std::collections::HashSet<String>,
) -> anyhow::Result<(Consistency, usize)> {
    let sdk = stack.moto.sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let pg = stack.pg.client().await?;
    let types: Vec<String> = SUBSCRIBED_TYPES.iter().map(|t| (*t).to_owned()).collect();
    let routed: i64 = pg
        .query_one("SELECT count(*) FROM outbox WHERE type = ANY($1)", &[&types])
        .await?
        .get(0);
    let expected_events = routed - parked as i64;
    let last = std::sync::Mutex::new(String::new());
    let outcome = crate::wait::until("the shipping service to converge", timeout, || {
        let (dynamo, pg, last) = (&dynamo, &pg, &last);
        async move {
            // Scanning moto competes with the pipeline for the same two cores: not too often.
            tokio::time::sleep(std::time::Duration::from_millis(800)).await;
            for p in procs {
                p.ensure_running()?;
            }
            // The inbox first, by count: the full comparison reads whole tables, so it waits
            // until every event has arrived. The emulator failing a read (a 500 under a long
            // run's load) is the harness' trouble, not the pipeline's: read again next time.
            let inbox = match count(dynamo, "shipping-inbox").await {
                Ok(n) => n,
                Err(err) => {
                    if let Ok(mut l) = last.lock() {
                        *l = format!("reading the inbox failed, retrying: {err:#}");
                    }
                    return Ok(None);
                }
            };
            if inbox < expected_events {
                if let Ok(mut l) = last.lock() {
                    *l = format!("inbox {inbox}/{expected_events}");
                }
                // Far from done (a long run's backlog): count less often, the count itself
                // reads the whole inbox in the emulator the service is writing to.
                if expected_events - inbox > 1000 {
                    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
                }
                return Ok(None);
            }
            let (report, left_out) = match check(pg, dynamo, "shipping-customers", "shipping-shipments").await
            {
                Ok(report) => report.excusing(excused),
                Err(err) => {
                    if let Ok(mut l) = last.lock() {
                        *l = format!("reading the projection failed, retrying: {err:#}");
                    }
                    return Ok(None);
                }
            };
            if let Ok(mut l) = last.lock() {
                *l = format!("{report}; {left_out} left out; inbox {inbox}/{expected_events}");
            }
            Ok(report.exact().then_some((report, left_out)))
        }
    })
    .await;
    outcome.map_err(|e| {
        let logs: Vec<String> = procs.iter().map(|p| p.output()).collect();
        let last = last.lock().map(|l| l.clone()).unwrap_or_default();
        anyhow::anyhow!("{e}\nlast: {last}\n{}", logs.join("\n"))
    })
}

#[cfg(test)]
mod tests {
    use super::Consistency;

    #[test]
    fn excusing_leaves_out_only_the_aggregates_named() {
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let report = Consistency {
            customers: 3,
            customer_mismatches: ids(&["c1", "c2"]),
            unknown_customers: ids(&["c9"]),
            approved_orders: 2,
            missing_shipments: ids(&["o1"]),
            extra_shipments: ids(&["o2", "o3"]),
        };
        let excused = ["c1", "c9", "o3"].iter().map(|s| (*s).to_owned()).collect();
        let (report, left_out) = report.excusing(&excused);
        assert_eq!(left_out, 3);
        assert_eq!(report.customer_mismatches, ids(&["c2"]));
        assert!(report.unknown_customers.is_empty());
        assert_eq!(report.missing_shipments, ids(&["o1"]));
        assert_eq!(report.extra_shipments, ids(&["o2"]));
        assert!(!report.exact());
    }
}

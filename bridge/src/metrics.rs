//! Prometheus metrics of the bridge, served with `/healthz` on `--metrics-listen`.
//! Names carry their unit.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use eventing::eventbridge::PublisherMetrics;
use eventing::health::Health;

type Labels = Vec<(String, String)>;

/// Every retry cause the sink reports (see `retry::transient_cause`).
const RETRY_CAUSES: [&str; 6] = eventing::retry::CAUSES;

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

pub struct Metrics {
    registry: Registry,
    /// `bridge_build_info` and the `process_*` figures.
    process: Registry,
    pub changes_captured: Counter,
    pub transactions_captured: Counter,
    pub records_published: Counter,
    pub records_oversized: Counter,
    pub batches_completed: Counter,
    pub put_calls: Counter,
    pub put_retries: Family<Labels, Counter>,
    pub reconnects: Counter,
    pub slot_resyncs: Counter,
    pub timeline_phantom_bytes: Counter,
    pub resync_rows: Counter,
    pub backfill_records: Counter,
    pub backfill_superseded: Counter,
    pub backfill_rereads: Counter,
    pub flushed_lsn: Gauge,
    pub server_wal_end_lsn: Gauge,
    pub slot_lag_bytes: Gauge,
    pub slot_retained_wal_bytes: Gauge,
    pub slot_retained_wal_age_seconds: Gauge,
    pub heartbeats_received: Counter,
    pub heartbeat_lag_seconds: Gauge<f64, AtomicU64>,
    pub oldest_unpublished_age_seconds: Gauge<f64, AtomicU64>,
    pub inflight_batches: Gauge,
    pub commit_to_ack_seconds: Histogram,
    pub relay_records_read: Counter,
    /// SubscribeToShard calls that opened an event stream (enhanced fan-out).
    pub relay_subscriptions: Counter,
    pub relay_records_skipped: Counter,
    /// Outbox events a route drops (`action = "skip"`, or `unmatched = "skip"`), by route.
    pub relay_events_dropped: Family<Labels, Counter>,
    /// The relay's publisher (`eventbridge_*`).
    pub publisher: PublisherMetrics,
    pub dead_letters: Family<Labels, Counter>,
    pub relay_shards_owned: Gauge,
    pub relay_millis_behind: Family<Labels, Gauge>,
    /// What `/healthz` answers from (served with the metrics).
    pub health: Arc<Health>,
}

/// What CloudWatch alarms watch that AWS does not measure itself (see `eventing::emf`).
pub const EMF_FIGURES: [eventing::emf::Figure; 5] = {
    use eventing::emf::{Figure, Take};
    [
        Figure {
            family: "bridge_slot_lag_bytes",
            name: "ReplicationLagBytes",
            unit: "Bytes",
            take: Take::Sum,
        },
        Figure {
            family: "bridge_slot_retained_wal_bytes",
            name: "RetainedWalBytes",
            unit: "Bytes",
            take: Take::Sum,
        },
        Figure {
            family: "bridge_oldest_unpublished_event_age_seconds",
            name: "OldestUnpublishedEventAge",
            unit: "Seconds",
            take: Take::Max,
        },
        Figure {
            family: "bridge_dead_letters_total",
            name: "EventsParked",
            unit: "Count",
            take: Take::Increase,
        },
        Figure {
            family: "bridge_relay_behind_latest_milliseconds",
            name: "RelayBehindLatest",
            unit: "Milliseconds",
            take: Take::Max,
        },
    ]
};

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("bridge");
        let m = Self {
            changes_captured: Counter::default(),
            transactions_captured: Counter::default(),
            records_published: Counter::default(),
            records_oversized: Counter::default(),
            batches_completed: Counter::default(),
            put_calls: Counter::default(),
            put_retries: Family::default(),
            reconnects: Counter::default(),
            slot_resyncs: Counter::default(),
            timeline_phantom_bytes: Counter::default(),
            resync_rows: Counter::default(),
            backfill_records: Counter::default(),
            backfill_superseded: Counter::default(),
            backfill_rereads: Counter::default(),
            flushed_lsn: Gauge::default(),
            server_wal_end_lsn: Gauge::default(),
            slot_lag_bytes: Gauge::default(),
            slot_retained_wal_bytes: Gauge::default(),
            slot_retained_wal_age_seconds: Gauge::default(),
            heartbeats_received: Counter::default(),
            heartbeat_lag_seconds: Gauge::default(),
            oldest_unpublished_age_seconds: Gauge::default(),
            inflight_batches: Gauge::default(),
            // 0.5 ms to ~23 s in 20 % steps: fine enough to read a p99.9 from the buckets.
            commit_to_ack_seconds: Histogram::new(exponential_buckets(0.0005, 1.2, 60)),
            relay_records_read: Counter::default(),
            relay_subscriptions: Counter::default(),
            relay_records_skipped: Counter::default(),
            publisher: PublisherMetrics::default(),
            dead_letters: Family::default(),
            relay_events_dropped: Family::default(),
            relay_shards_owned: Gauge::default(),
            relay_millis_behind: Family::default(),
            health: Health::new(),
            registry: Registry::default(),
            process: eventing::process_metrics::registry("bridge", env!("CARGO_PKG_VERSION")),
        };
        registry.register(
            "capture_changes",
            "Row changes decoded from the replication stream",
            m.changes_captured.clone(),
        );
        registry.register(
            "capture_transactions",
            "Committed transactions decoded",
            m.transactions_captured.clone(),
        );
        registry.register(
            "kinesis_records_published",
            "Records Kinesis accepted",
            m.records_published.clone(),
        );
        registry.register(
            "capture_records_oversized",
            "Records above the Kinesis stream's record limit (1 MiB unless raised), sent without their large columns",
            m.records_oversized.clone(),
        );
        registry.register(
            "capture_batches_completed",
            "Batches whose every record Kinesis accepted",
            m.batches_completed.clone(),
        );
        registry.register(
            "kinesis_put_records_calls",
            "Successful PutRecords calls",
            m.put_calls.clone(),
        );
        registry.register(
            "kinesis_put_records_retries",
            "PutRecords retries by cause",
            m.put_retries.clone(),
        );
        registry.register(
            "capture_reconnects",
            "Reconnections to Postgres",
            m.reconnects.clone(),
        );
        registry.register(
            "slot_resyncs",
            "Outbox resyncs after a lost slot (--on-slot-loss resync-outbox)",
            m.slot_resyncs.clone(),
        );
        registry.register(
            "slot_timeline_phantom_wal_bytes",
            "WAL acknowledged on an old timeline past the point a promoted server forked from it: records of commits a failover took back",
            m.timeline_phantom_bytes.clone(),
        );
        registry.register(
            "slot_resync_rows",
            "Outbox rows re-published by resyncs",
            m.resync_rows.clone(),
        );
        registry.register(
            "backfill_records",
            "Rows sent as DMS load records by backfills (again when a chunk is replayed)",
            m.backfill_records.clone(),
        );
        registry.register(
            "backfill_rows_superseded",
            "Backfilled rows left out because a change newer than the chunk's copy is in the stream",
            m.backfill_superseded.clone(),
        );
        registry.register(
            "backfill_chunks_reread",
            "Backfill chunks read again because a transaction already in the stream was not yet visible to them",
            m.backfill_rereads.clone(),
        );
        registry.register(
            "slot_flushed_lsn",
            "The LSN acknowledged to the slot (as a number)",
            m.flushed_lsn.clone(),
        );
        registry.register(
            "server_wal_end_lsn",
            "The server's WAL end from its last keepalive (as a number)",
            m.server_wal_end_lsn.clone(),
        );
        registry.register(
            "slot_retained_wal_bytes",
            "WAL the slot holds back on the server (pg_current_wal_lsn - restart_lsn), checked every 10 s",
            m.slot_retained_wal_bytes.clone(),
        );
        registry.register(
            "slot_retained_wal_age_seconds",
            "How long ago the server wrote the oldest WAL the slot holds back (dated by 10 s samples \
             of the server's WAL position; 0 when nothing is retained)",
            m.slot_retained_wal_age_seconds.clone(),
        );
        registry.register(
            "capture_heartbeats_received",
            "Heartbeats (pg_logical_emit_message, --heartbeat-interval) that came back through the slot",
            m.heartbeats_received.clone(),
        );
        registry.register(
            "capture_heartbeat_lag_seconds",
            "How long the last heartbeat took from its write to capture reading it from the slot",
            m.heartbeat_lag_seconds.clone(),
        );
        registry.register(
            "slot_lag_bytes",
            "WAL between the server's end and the acknowledged position",
            m.slot_lag_bytes.clone(),
        );
        registry.register(
            "oldest_unpublished_event_age_seconds",
            "Age of the oldest committed change not yet accepted by Kinesis",
            m.oldest_unpublished_age_seconds.clone(),
        );
        // The slot is acknowledged the moment Kinesis has accepted everything before a position,
        // so its confirmed lag in time is that same age; named for those who look for the slot.
        registry.register(
            "slot_confirmed_lag_seconds",
            "Age of the oldest committed change the slot is not yet acknowledged past",
            m.oldest_unpublished_age_seconds.clone(),
        );
        registry.register(
            "capture_commit_to_ack_seconds",
            "From a transaction's commit (pgoutput Commit time) to Kinesis accepting the batch that \
             carries it; observed once per batch, for its oldest commit",
            m.commit_to_ack_seconds.clone(),
        );
        registry.register(
            "capture_inflight_batches",
            "PutRecords batches awaiting completion",
            m.inflight_batches.clone(),
        );
        registry.register(
            "relay_records_read",
            "Kinesis records read by the relay",
            m.relay_records_read.clone(),
        );
        registry.register(
            "relay_subscriptions",
            "SubscribeToShard event streams opened (enhanced fan-out, --consumer-name)",
            m.relay_subscriptions.clone(),
        );
        registry.register(
            "relay_records_skipped",
            "Records that are not outbox inserts, skipped",
            m.relay_records_skipped.clone(),
        );
        registry.register(
            "relay_events_dropped",
            "Outbox events a route drops on purpose (never parked), by route",
            m.relay_events_dropped.clone(),
        );
        m.publisher.register(&mut registry);
        registry.register(
            "dead_letters",
            "Records parked in the dead-letter queue, by kind",
            m.dead_letters.clone(),
        );
        registry.register(
            "relay_shards_owned",
            "Shard leases this relay holds",
            m.relay_shards_owned.clone(),
        );
        registry.register(
            "relay_behind_latest_milliseconds",
            "How far behind the stream's latest record each shard's reader is (Kinesis' MillisBehindLatest)",
            m.relay_millis_behind.clone(),
        );
        // The old name of the same figure, kept for a release (it said "checkpoint", which it is not).
        registry.register(
            "relay_checkpoint_lag_milliseconds",
            "Deprecated: bridge_relay_behind_latest_milliseconds",
            m.relay_millis_behind.clone(),
        );
        // Known label values start at 0: an empty family is left out of the exposition, and a
        // series that appears only at its first increment breaks `rate()` and alerts on it.
        for kind in ["malformed", "refused"] {
            let _ = m.dead_letters.get_or_create(&label("kind", kind));
        }
        for cause in RETRY_CAUSES {
            let _ = m.put_retries.get_or_create(&label("cause", cause));
        }
        Arc::new(Self { registry, ..m })
    }

    pub fn render(&self) -> String {
        eventing::process_metrics::render(&[&self.registry, &self.process])
    }
}

/// Serves `/metrics` and `/healthz` until the process ends. Returns the bound address.
pub async fn serve(listen: &str, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let health = metrics.health.clone();
    eventing::server::serve(listen, move || metrics.render(), health).await
}

#[cfg(test)]
mod reference_page {
    /// docs/src/reference/metrics-bridge.md is what the registry declares (UPDATE_DOCS=1 rewrites it).
    #[test]
    fn reference_page_of_the_metrics_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let page = reference_docs::metrics_reference("bridge", &super::Metrics::new().render());
        if let Err(stale) = reference_docs::check_page(&root, "docs/src/reference/metrics-bridge.md", &page) {
            panic!("{stale}");
        }
    }
}

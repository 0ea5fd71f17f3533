//! Prometheus metrics of the shipping service, served with `/healthz` on `--metrics-listen`.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use eventing::eventbridge::PublisherMetrics;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    /// Messages taken from the queue, by what applying them did (changed/stale/ignored/duplicate).
    pub events_applied: Family<Labels, Counter>,
    /// Failed attempts, by kind (unusable/transient/refused).
    pub events_failed: Family<Labels, Counter>,
    pub events_dead_lettered: Counter,
    pub messages_in_flight: Gauge,
    /// Messages in the events' dead-letter queue (read from SQS: EventBridge parks there too).
    pub dead_letter_queue_messages: Gauge,
    pub outbox_events_published: Counter,
    pub outbox_events_refused: Counter,
    pub outbox_events_parked: Counter,
    /// The publisher's PutEvents counters (`bridge_eventbridge_*`, the names the relay's
    /// publisher uses: one dashboard reads both).
    pub publisher: PublisherMetrics,
    publisher_registry: Registry,
    /// `shipping_build_info` and the `process_*` figures.
    process: Registry,
    /// What `/healthz` answers from: the consumer's and the publisher's signs of life.
    pub health: Arc<eventing::health::Health>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("shipping");
        let m = Self {
            events_applied: Family::default(),
            events_failed: Family::default(),
            events_dead_lettered: Counter::default(),
            messages_in_flight: Gauge::default(),
            dead_letter_queue_messages: Gauge::default(),
            outbox_events_published: Counter::default(),
            outbox_events_refused: Counter::default(),
            outbox_events_parked: Counter::default(),
            publisher: PublisherMetrics::default(),
            publisher_registry: Registry::default(),
            process: eventing::process_metrics::registry("shipping", env!("CARGO_PKG_VERSION")),
            health: eventing::health::Health::new(),
            registry: Registry::default(),
        };
        let mut publisher_registry = Registry::with_prefix("bridge");
        m.publisher.register(&mut publisher_registry);
        registry.register(
            "events_applied",
            "Incoming events processed, by outcome",
            m.events_applied.clone(),
        );
        registry.register(
            "events_failed",
            "Failed attempts at applying an event, by kind",
            m.events_failed.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Unusable events moved to the dead-letter queue with their reason",
            m.events_dead_lettered.clone(),
        );
        registry.register(
            "messages_in_flight",
            "Messages being applied right now",
            m.messages_in_flight.clone(),
        );
        registry.register(
            "dead_letter_queue_messages",
            "Messages waiting in the events' dead-letter queue (parked by this service or by EventBridge)",
            m.dead_letter_queue_messages.clone(),
        );
        registry.register(
            "outbox_events_published",
            "Shipment events published to EventBridge from the outbox stream",
            m.outbox_events_published.clone(),
        );
        registry.register(
            "outbox_events_refused",
            "Shipment events EventBridge refused for their content",
            m.outbox_events_refused.clone(),
        );
        registry.register(
            "outbox_events_parked",
            "Outbox items parked in the publisher's dead-letter queue (refused, or not an event)",
            m.outbox_events_parked.clone(),
        );
        // Known label values start at 0 (an empty family is left out of the exposition).
        for outcome in ["changed", "stale", "ignored", "duplicate"] {
            m.applied_family_init(outcome);
        }
        for kind in ["unusable", "transient", "refused"] {
            let _ = m
                .events_failed
                .get_or_create(&vec![("kind".to_owned(), kind.to_owned())]);
        }
        Arc::new(Self {
            registry,
            publisher_registry,
            ..m
        })
    }

    /// Both registries as one exposition (the first one's `# EOF` would end it for an
    /// OpenMetrics reader).
    pub fn render(&self) -> String {
        eventing::process_metrics::render(&[&self.registry, &self.publisher_registry, &self.process])
    }

    fn applied_family_init(&self, outcome: &str) {
        let _ = self
            .events_applied
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())]);
    }

    pub fn applied(&self, outcome: &str) {
        self.events_applied
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    pub fn failed(&self, kind: &str) {
        self.events_failed
            .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
            .inc();
    }
}

#[cfg(test)]
mod reference_page {
    /// docs/src/reference/metrics-shipping.md is what the registries declare (UPDATE_DOCS=1 rewrites it).
    #[test]
    fn reference_page_of_the_metrics_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let page = reference_docs::metrics_reference("shipping", &super::Metrics::new().render());
        if let Err(stale) = reference_docs::check_page(&root, "docs/src/reference/metrics-shipping.md", &page)
        {
            panic!("{stale}");
        }
    }
}

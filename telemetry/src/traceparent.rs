//! W3C Trace Context `traceparent` values: the one parser every process uses — OpenTelemetry's
//! own propagator (version `ff` refused, zero ids refused, a future version's extra fields
//! accepted, as the specification says) — and fresh values for work that arrives without one.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

/// The span context a `traceparent` names; `None` when the value is not a valid one.
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    if !fixed_widths(traceparent) {
        return None;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span();
    let found = span.span_context();
    found.is_valid().then(|| found.clone())
}

/// The specification's field widths (2-32-16-2, then `-` or the end): the propagator reads ids
/// shorter than their field as if zero-padded, which the specification does not allow.
fn fixed_widths(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() >= 55 && b[2] == b'-' && b[35] == b'-' && b[52] == b'-' && (b.len() == 55 || b[55] == b'-')
}

/// Whether `traceparent` is a valid value (kept as sent when it is).
pub fn is_valid(traceparent: &str) -> bool {
    span_context(traceparent).is_some()
}

/// A fresh, sampled `traceparent` with random non-zero ids.
pub fn generate() -> String {
    let ids = RandomIdGenerator::default();
    format!("00-{}-{}-01", ids.new_trace_id(), ids.new_span_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn accepts_the_w3c_example() {
        let context = span_context(VALID).map(|c| (c.trace_id().to_string(), c.is_sampled()));
        assert_eq!(
            context,
            Some(("4bf92f3577b34da6a3ce929d0e0e4736".to_owned(), true))
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "garbage",
            "00-abc-def-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn accepts_future_versions_with_extra_fields() {
        assert!(is_valid(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"
        ));
        assert!(!is_valid(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"
        ));
    }

    #[test]
    fn generated_values_are_valid_and_distinct() {
        let (first, second) = (generate(), generate());
        assert!(is_valid(&first), "{first}");
        assert_ne!(first, second);
    }
}

//! W3C Trace Context `traceparent` values, stored in `outbox.tracingspancontext`. An incoming
//! header is kept as sent when valid (telemetry's parser, OpenTelemetry's propagator);
//! otherwise a fresh one is generated, so every event can be traced.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

impl TraceParent {
    /// Parses a header value; `None` when it is not a valid `traceparent`.
    pub fn parse(value: &str) -> Option<Self> {
        telemetry::traceparent::is_valid(value).then(|| Self(value.to_owned()))
    }

    /// A fresh, sampled `traceparent` with random non-zero ids.
    pub fn generate() -> Self {
        Self(telemetry::traceparent::generate())
    }

    /// The incoming header if valid, else a fresh one.
    pub fn from_header_or_generate(header: Option<&str>) -> Self {
        header.and_then(Self::parse).unwrap_or_else(Self::generate)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn accepts_the_w3c_example() {
        assert_eq!(
            TraceParent::parse(VALID).map(|tp| tp.to_string()),
            Some(VALID.to_owned())
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn accepts_future_versions_with_extra_fields() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert!(TraceParent::parse(future).is_some());
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_none());
    }

    #[test]
    fn generated_values_are_valid_and_distinct() {
        let (first, second) = (TraceParent::generate(), TraceParent::generate());
        assert_eq!(TraceParent::parse(first.as_str()), Some(first.clone()));
        assert_ne!(first, second);
    }

    #[test]
    fn invalid_headers_are_replaced() {
        assert_eq!(TraceParent::from_header_or_generate(Some(VALID)).as_str(), VALID);
        let replaced = TraceParent::from_header_or_generate(Some("nope"));
        assert!(TraceParent::parse(replaced.as_str()).is_some());
    }
}

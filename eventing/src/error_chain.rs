//! Errors as one line of text with their causes: an AWS SDK error's own text is only
//! "service error", the reason is in its sources.

/// The causes of `err`, outermost first, `a: b: c` (empty when it has none).
pub fn source_chain(err: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cause = err.source();
    while let Some(c) = cause {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// `err` and its causes, `err: a: b`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let causes = source_chain(err);
    if causes.is_empty() {
        err.to_string()
    } else {
        format!("{err}: {causes}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn names_every_cause() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(source_chain(&err), "inner");
        assert_eq!(chain(&err), "outer: inner");
        assert_eq!(chain(&std::io::Error::other("alone")), "alone");
    }
}

//! SQL text the bridge builds itself (publication and role names in DDL and replication
//! commands, where parameters cannot be used).

/// An identifier quoted for SQL: any name, even one with quotes or capitals, stays one name.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_and_doubles_embedded_quotes() {
        assert_eq!(super::quote_ident("outbox"), "\"outbox\"");
        assert_eq!(super::quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}

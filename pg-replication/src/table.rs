//! Schema-qualified table names as given on the command line (`public.outbox`, `outbox`).

use std::fmt;
use std::str::FromStr;

use crate::sql::quote_ident;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// The name quoted as an SQL identifier, safe to splice into DDL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a table name (expected schema.table, letters, digits, _ and $)")]
pub struct ParseTableError(String);

impl FromStr for TableName {
    type Err = ParseTableError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (schema, name) = s.trim().split_once('.').unwrap_or(("public", s.trim()));
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 63
                && part.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$')
                && !part.starts_with(|c: char| c.is_ascii_digit())
        };
        if valid(schema) && valid(name) {
            Ok(Self {
                schema: schema.into(),
                name: name.into(),
            })
        } else {
            Err(ParseTableError(s.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults_the_schema() {
        assert_eq!(
            "outbox".parse::<TableName>().unwrap().to_string(),
            "public.outbox"
        );
        assert_eq!(
            "shop.orders".parse::<TableName>().unwrap().quoted(),
            "\"shop\".\"orders\""
        );
        assert!("public.out box".parse::<TableName>().is_err());
        assert!("x;drop table y".parse::<TableName>().is_err());
        assert!("".parse::<TableName>().is_err());
    }
}

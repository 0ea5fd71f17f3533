//! Partition keys per table, named as DMS's object mapping names them.

use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionKey {
    /// A column's value (`attribute-name`); the outbox default is `aggregateid`, so one
    /// aggregate's events stay on one shard, in order.
    Attribute(String),
    PrimaryKey,
    SchemaTable,
    TransactionId,
}

impl PartitionKey {
    /// The value DMS puts in `metadata.partition-key-type`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Attribute(_) => "attribute-name",
            Self::PrimaryKey => "primary-key",
            Self::SchemaTable => "schema-table",
            Self::TransactionId => "transaction-id",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a partition key (expected attribute-name:COLUMN, primary-key, schema-table or transaction-id)"
)]
pub struct ParsePartitionKeyError(String);

impl FromStr for PartitionKey {
    type Err = ParsePartitionKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("attribute-name", column)) if !column.is_empty() => Ok(Self::Attribute(column.into())),
            None if s == "primary-key" => Ok(Self::PrimaryKey),
            None if s == "schema-table" => Ok(Self::SchemaTable),
            None if s == "transaction-id" => Ok(Self::TransactionId),
            _ => Err(ParsePartitionKeyError(s.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dms_names() {
        assert_eq!(
            "attribute-name:aggregateid".parse::<PartitionKey>().unwrap(),
            PartitionKey::Attribute("aggregateid".into())
        );
        assert_eq!(
            "primary-key".parse::<PartitionKey>().unwrap(),
            PartitionKey::PrimaryKey
        );
        assert!("attribute-name:".parse::<PartitionKey>().is_err());
        assert!("random".parse::<PartitionKey>().is_err());
    }
}

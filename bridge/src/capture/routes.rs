//! Per-table capture rules: which partition key a table's records get, and which tables are
//! outboxes (whose updates and deletes never become records).

use std::collections::HashMap;

use crate::partition::PartitionKey;
use crate::table::TableName;

#[derive(Clone, Debug)]
pub struct TableRoutes {
    /// The outbox table messages (`pg_logical_emit_message`) stand for and a resync re-reads.
    pub outbox: TableName,
    pub outbox_key: PartitionKey,
    /// Its `occurred_at` column (a resync's window), by the file's column names.
    pub outbox_occurred_at: String,
    /// Further outbox tables (`[[routing.tables]]`), each keyed by its aggregate id column.
    pub more_outboxes: Vec<(TableName, PartitionKey)>,
    pub overrides: HashMap<TableName, PartitionKey>,
}

impl TableRoutes {
    pub fn key_for(&self, table: &TableName) -> PartitionKey {
        if let Some(key) = self.overrides.get(table) {
            return key.clone();
        }
        if *table == self.outbox {
            return self.outbox_key.clone();
        }
        match self.more_outboxes.iter().find(|(t, _)| t == table) {
            Some((_, key)) => key.clone(),
            None => PartitionKey::PrimaryKey,
        }
    }

    pub fn is_outbox(&self, table: &TableName) -> bool {
        *table == self.outbox || self.more_outboxes.iter().any(|(t, _)| t == table)
    }
}

impl Default for TableRoutes {
    fn default() -> Self {
        Self {
            outbox: TableName {
                schema: "public".into(),
                name: "outbox".into(),
            },
            outbox_key: PartitionKey::Attribute("aggregateid".into()),
            outbox_occurred_at: "occurred_at".into(),
            more_outboxes: Vec::new(),
            overrides: HashMap::new(),
        }
    }
}

//! Per-table capture rules: which partition key a table's records get, and which tables are
//! outboxes (whose updates and deletes never become records).

use std::collections::HashMap;

use crate::partition::PartitionKey;
use crate::table::TableName;

#[derive(Clone, Debug)]
pub struct TableRoutes {
    pub outbox: TableName,
    pub outbox_key: PartitionKey,
    pub overrides: HashMap<TableName, PartitionKey>,
}

impl TableRoutes {
    pub fn key_for(&self, table: &TableName) -> PartitionKey {
        if let Some(key) = self.overrides.get(table) {
            return key.clone();
        }
        if *table == self.outbox {
            self.outbox_key.clone()
        } else {
            PartitionKey::PrimaryKey
        }
    }

    pub fn is_outbox(&self, table: &TableName) -> bool {
        *table == self.outbox
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
            overrides: HashMap::new(),
        }
    }
}

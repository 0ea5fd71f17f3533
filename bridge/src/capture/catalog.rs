//! What the catalog says about a table, in the shape pgoutput would describe it: the resync,
//! the backfill and the full load read rows themselves and must encode them exactly as
//! streaming would.

use tokio_postgres::Client;

use crate::replication::pgoutput::{Column, Relation};
use crate::table::TableName;

/// The table's columns in attnum order, without dropped or generated ones (as pgoutput sends
/// them); no columns when the table does not exist.
pub async fn table_relation(client: &Client, table: &TableName) -> Result<Relation, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::int8 FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attgenerated = '' ORDER BY a.attnum",
            &[&table.quoted()],
        )
        .await?;
    Ok(Relation {
        id: 0,
        namespace: table.schema.clone(),
        name: table.name.clone(),
        columns: rows
            .iter()
            .map(|r| Column {
                name: r.get(0),
                type_oid: u32::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                is_key: false,
            })
            .collect(),
    })
}

/// Positions (in `relation`) of the table's primary-key columns, in key order.
pub async fn primary_key_columns(
    client: &Client,
    table: &TableName,
    relation: &Relation,
) -> Result<Vec<usize>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&table.quoted()],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            relation.columns.iter().position(|c| c.name == name)
        })
        .collect())
}

pub use crate::replication::clock::server_now;

//! Where the database's bytes go, table by table: `tally space` prints it so an operator can
//! see what grows, and `tally bench` divides it by the events stored.

use super::{tables, ReadTxn, ReadableTable, StoreError, TableDef};

/// The room one table takes in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpace {
    /// The table's name (as in `store::tables`).
    pub name: &'static str,
    /// Rows in it.
    pub rows: u64,
    /// Bytes of its keys and values alone (redb; PostgreSQL does not say without a full scan).
    pub stored_bytes: Option<u64>,
    /// Bytes it occupies: pages with their free space and index overhead included.
    pub allocated_bytes: u64,
}

/// Measures every table of the snapshot, largest first.
pub fn measure(tx: &ReadTxn) -> Result<Vec<TableSpace>, StoreError> {
    let mut out = Vec::new();
    for t in tables::TEXT_TABLES {
        out.push(one(tx, *t)?);
    }
    for t in tables::BYTES_TABLES {
        out.push(one(tx, *t)?);
    }
    for t in tables::SET_TABLES {
        out.push(one(tx, *t)?);
    }
    out.sort_by(|a, b| {
        b.allocated_bytes
            .cmp(&a.allocated_bytes)
            .then(a.name.cmp(b.name))
    });
    Ok(out)
}

/// The measurements as a text table, with a total line.
pub fn report(tables: &[TableSpace]) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<28} {:>12} {:>14} {:>14} {:>6}\n",
        "table", "rows", "stored bytes", "allocated", "share"
    );
    let total: u64 = tables.iter().map(|t| t.allocated_bytes).sum();
    for t in tables
        .iter()
        .filter(|t| t.rows > 0 || t.allocated_bytes > 0)
    {
        let stored = t.stored_bytes.map_or("-".to_string(), |b| b.to_string());
        let share_permille = t.allocated_bytes.saturating_mul(1000) / total.max(1);
        let _ = writeln!(
            out,
            "{:<28} {:>12} {:>14} {:>14} {:>3}.{}%",
            t.name,
            t.rows,
            stored,
            t.allocated_bytes,
            share_permille / 10,
            share_permille % 10
        );
    }
    let _ = writeln!(out, "{:<28} {:>12} {:>14} {:>14}", "total", "", "", total);
    out
}

fn one<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &ReadTxn,
    def: TableDef<K, V>,
) -> Result<TableSpace, StoreError> {
    let rows = tx.open_table(def)?.len()?;
    match tx.as_redb() {
        Some(redb_tx) => {
            use redb::ReadableTableMetadata;
            let stats = redb_tx.open_table(def.redb())?.stats()?;
            Ok(TableSpace {
                name: def.name(),
                rows,
                stored_bytes: Some(stats.stored_bytes()),
                allocated_bytes: stats
                    .stored_bytes()
                    .saturating_add(stats.metadata_bytes())
                    .saturating_add(stats.fragmented_bytes()),
            })
        }
        None => Ok(TableSpace {
            name: def.name(),
            rows,
            stored_bytes: None,
            allocated_bytes: tx.relation_bytes(def.name())?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn every_table_is_measured_and_rows_take_room() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("t.redb"), 1 << 20).expect("open");
        let empty = measure(&store.read().expect("read")).expect("measure");
        let tables = tables::TEXT_TABLES.len() + tables::BYTES_TABLES.len();
        assert_eq!(empty.len(), tables + tables::SET_TABLES.len());
        let events = |m: &[TableSpace]| {
            m.iter()
                .find(|t| t.name == "events")
                .cloned()
                .expect("events table")
        };
        assert_eq!(events(&empty).rows, 0);

        let tx = store.begin_write().expect("write");
        {
            let mut table = tx.open_table(tables::EVENTS).expect("table");
            for i in 0u32..100 {
                table
                    .insert(i.to_be_bytes().as_slice(), [7u8; 100].as_slice())
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
        let full = measure(&store.read().expect("read")).expect("measure");
        let e = events(&full);
        assert_eq!(e.rows, 100);
        let stored = e.stored_bytes.expect("redb says");
        assert!(stored >= 100 * 104, "{stored}");
        assert!(e.allocated_bytes >= stored);
        assert_eq!(full[0].name, "events", "largest first: {full:?}");
        let text = report(&full);
        assert!(
            text.lines().nth(1).expect("a row").starts_with("events "),
            "{text}"
        );
        assert!(
            text.lines().last().expect("total").starts_with("total"),
            "{text}"
        );
    }
}

//! The statements each table is read and written with. Table names come from `store::tables`
//! (fixed identifiers), never from input; keys and values are always parameters.

use std::ops::Bound;

use tokio_postgres::types::ToSql;

use super::client::{Conn, Reply, Step};
use super::RawRow;
use crate::store::StoreError;

/// The PostgreSQL table behind a Tally table.
pub(crate) fn table_name(table: &str) -> String {
    format!("tally_{table}")
}

/// `CREATE TABLE IF NOT EXISTS` for one table.
pub(crate) fn create(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (k bytea PRIMARY KEY, v bytea NOT NULL);",
        table_name(table)
    )
}

/// The value under one key.
pub(crate) fn get(conn: &mut Conn, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let sql = format!("SELECT v FROM {} WHERE k = $1", table_name(table));
    let rows = conn.query(&sql, &[&key])?;
    rows.first()
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(decode)
}

/// The rows under `keys` that exist, in one round trip.
pub(crate) fn get_many(
    conn: &mut Conn,
    table: &str,
    keys: &Vec<Vec<u8>>,
) -> Result<Vec<RawRow>, StoreError> {
    let sql = format!("SELECT k, v FROM {} WHERE k = ANY($1)", table_name(table));
    rows(conn.query(&sql, &[keys])?)
}

/// The statement writing every `(key, value)` at once, replacing existing rows.
pub(crate) fn upsert<'a>(
    conn: &mut Conn,
    table: &str,
    keys: &'a Vec<Vec<u8>>,
    values: &'a Vec<Vec<u8>>,
) -> Result<Step<'a>, StoreError> {
    let sql = format!(
        "INSERT INTO {} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
        table_name(table)
    );
    Ok(Step::Execute(conn.prepare(&sql)?, vec![keys, values]))
}

/// The statement deleting every row under `keys` at once.
pub(crate) fn delete_many<'a>(
    conn: &mut Conn,
    table: &str,
    keys: &'a Vec<Vec<u8>>,
) -> Result<Step<'a>, StoreError> {
    let sql = format!("DELETE FROM {} WHERE k = ANY($1)", table_name(table));
    Ok(Step::Execute(conn.prepare(&sql)?, vec![keys]))
}

/// Deletes every row of the table.
pub(crate) fn clear(conn: &mut Conn, table: &str) -> Result<(), StoreError> {
    let sql = format!("DELETE FROM {}", table_name(table));
    conn.query(&sql, &[]).map(|_| ())
}

/// The first failure among pipelined answers, if any.
pub(crate) fn first_error(answers: Vec<Result<Reply, StoreError>>) -> Result<(), StoreError> {
    answers
        .into_iter()
        .try_for_each(|answer| answer.map(|_| ()))
}

/// Bytes the table occupies with its indexes and TOAST (`pg_total_relation_size`).
pub(crate) fn relation_bytes(conn: &mut Conn, table: &str) -> Result<u64, StoreError> {
    let rows = conn.query(
        "SELECT pg_total_relation_size(to_regclass($1))::bigint",
        &[&table_name(table)],
    )?;
    let n: Option<i64> = rows
        .first()
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(decode)?
        .flatten();
    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
}

/// How many rows the table holds.
pub(crate) fn count(conn: &mut Conn, table: &str) -> Result<u64, StoreError> {
    let sql = format!("SELECT count(*) FROM {}", table_name(table));
    let rows = conn.query(&sql, &[])?;
    let n: i64 = rows
        .first()
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(decode)?
        .unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Up to `limit` rows within the bounds, in key order (descending when `reverse`).
pub(crate) fn page(
    conn: &mut Conn,
    table: &str,
    lower: &Bound<Vec<u8>>,
    upper: &Bound<Vec<u8>>,
    reverse: bool,
    limit: usize,
) -> Result<Vec<RawRow>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(3);
    let mut conditions = Vec::with_capacity(2);
    for (bound, inclusive, exclusive) in [(lower, ">=", ">"), (upper, "<=", "<")] {
        match bound {
            Bound::Included(key) => {
                params.push(key);
                conditions.push(format!("k {inclusive} ${}", params.len()));
            }
            Bound::Excluded(key) => {
                params.push(key);
                conditions.push(format!("k {exclusive} ${}", params.len()));
            }
            Bound::Unbounded => {}
        }
    }
    params.push(&limit);
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT k, v FROM {}{filter} ORDER BY k {} LIMIT ${}",
        table_name(table),
        if reverse { "DESC" } else { "ASC" },
        params.len()
    );
    rows(conn.query(&sql, &params)?)
}

fn rows(rows: Vec<tokio_postgres::Row>) -> Result<Vec<RawRow>, StoreError> {
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(decode)
}

fn decode(error: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(format!(
        "unexpected row: {}",
        super::client::one_line(&error)
    ))
}

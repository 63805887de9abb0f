//! Generic table access: list a service's tables and columns from the catalog, read every row as
//! typed cells, and write cells back converted to the target column's type. Works on SQLite and
//! PostgreSQL, in either direction.

use chrono::{DateTime, NaiveDateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};
use serde::{Deserialize, Serialize};

/// The table sea-orm-migration keeps its applied versions in.
pub const MIGRATIONS_TABLE: &str = "seaql_migrations";

/// One value of a row, as stored in the archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Text(String),
    /// Base64 (standard alphabet, padded).
    Bytes(String),
    Uuid(String),
    /// RFC 3339, UTC.
    Timestamp(String),
}

/// A column and its declared type (SQLite declaration or PostgreSQL `udt_name`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub decl: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Int16,
    Int32,
    Int,
    Real32,
    Real,
    Text,
    Bytes,
    Uuid,
    Timestamp,
    NaiveTimestamp,
    /// A PostgreSQL type read and written as text with a cast.
    Other,
}

fn kind(backend: DbBackend, decl: &str) -> Kind {
    let decl = decl.to_ascii_lowercase();
    if backend == DbBackend::Postgres {
        return match decl.as_str() {
            "bool" => Kind::Bool,
            "int2" => Kind::Int16,
            "int4" => Kind::Int32,
            "int8" => Kind::Int,
            "float4" => Kind::Real32,
            "float8" => Kind::Real,
            "text" | "varchar" | "bpchar" | "name" => Kind::Text,
            "bytea" => Kind::Bytes,
            "uuid" => Kind::Uuid,
            "timestamptz" => Kind::Timestamp,
            "timestamp" => Kind::NaiveTimestamp,
            _ => Kind::Other,
        };
    }
    // SQLite: the declared type names sea-query writes (`boolean`, `timestamp_with_timezone_text`,
    // `uuid_text`, `blob`, `bigint`, ...), by SQLite's own affinity rules where they fit.
    if decl.contains("bool") {
        Kind::Bool
    } else if decl.contains("uuid") {
        Kind::Uuid
    } else if decl.contains("timestamp") || decl.contains("datetime") {
        Kind::Timestamp
    } else if decl.contains("int") {
        Kind::Int
    } else if decl.contains("real") || decl.contains("floa") || decl.contains("doub") {
        Kind::Real
    } else if decl.contains("blob") || decl.contains("binary") || decl.is_empty() {
        Kind::Bytes
    } else {
        Kind::Text
    }
}

/// `"name"`, with embedded quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(backend, sql, values)
}

/// The service's tables, by name.
pub async fn tables(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        }
        _ => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    };
    db.query_all_raw(statement(backend, sql, vec![]))
        .await?
        .iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect()
}

/// The table's columns, in order.
pub async fn columns(db: &impl ConnectionTrait, table: &str) -> Result<Vec<Column>, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT column_name::text, udt_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
        }
        _ => "SELECT name, type FROM pragma_table_info(?) ORDER BY cid",
    };
    db.query_all_raw(statement(backend, sql, vec![table.into()]))
        .await?
        .iter()
        .map(|row| {
            Ok(Column {
                name: row.try_get_by_index::<String>(0)?,
                decl: row.try_get_by_index::<String>(1)?,
            })
        })
        .collect()
}

/// How many rows `table` holds.
pub async fn count(db: &impl ConnectionTrait, table: &str) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(statement(
            backend,
            &format!("SELECT COUNT(*) FROM {}", quote(table)),
            vec![],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("no count for {table}")))?;
    let count = row.try_get_by_index::<i64>(0)?;
    Ok(u64::try_from(count).unwrap_or_default())
}

/// Every row of `table`, cell by cell in `columns` order.
pub async fn read_rows(db: &impl ConnectionTrait, table: &str, columns: &[Column]) -> Result<Vec<Vec<Cell>>, DbErr> {
    let backend = db.get_database_backend();
    let select: Vec<String> = columns
        .iter()
        .map(|column| match kind(backend, &column.decl) {
            Kind::Other => format!("{}::text", quote(&column.name)),
            _ => quote(&column.name),
        })
        .collect();
    let sql = format!("SELECT {} FROM {}", select.join(", "), quote(table));
    let rows = db.query_all_raw(statement(backend, &sql, vec![])).await?;
    rows.iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(index, column)| read_cell(backend, row, index, &column.decl))
                .collect()
        })
        .collect()
}

fn read_cell(backend: DbBackend, row: &QueryResult, index: usize, decl: &str) -> Result<Cell, DbErr> {
    fn get<T: sea_orm::TryGetable>(row: &QueryResult, index: usize) -> Result<Option<T>, DbErr> {
        row.try_get_by_index::<Option<T>>(index)
    }
    fn wrap<T>(value: Option<T>, cell: impl FnOnce(T) -> Cell) -> Cell {
        value.map_or(Cell::Null, cell)
    }
    if backend != DbBackend::Postgres {
        // SQLite: read the value's storage class as it is, so SQLite to SQLite is byte-exact.
        if let Ok(value) = get::<i64>(row, index) {
            return Ok(wrap(value, Cell::Int));
        }
        if let Ok(value) = get::<f64>(row, index) {
            return Ok(wrap(value, Cell::Real));
        }
        if let Ok(value) = get::<String>(row, index) {
            return Ok(wrap(value, Cell::Text));
        }
        return Ok(wrap(get::<Vec<u8>>(row, index)?, |bytes| Cell::Bytes(b64(&bytes))));
    }
    Ok(match kind(backend, decl) {
        Kind::Bool => wrap(get::<bool>(row, index)?, Cell::Bool),
        Kind::Int16 => wrap(get::<i16>(row, index)?, |v| Cell::Int(v.into())),
        Kind::Int32 => wrap(get::<i32>(row, index)?, |v| Cell::Int(v.into())),
        Kind::Int => wrap(get::<i64>(row, index)?, Cell::Int),
        Kind::Real32 => wrap(get::<f32>(row, index)?, |v| Cell::Real(v.into())),
        Kind::Real => wrap(get::<f64>(row, index)?, Cell::Real),
        Kind::Text | Kind::Other => wrap(get::<String>(row, index)?, Cell::Text),
        Kind::Bytes => wrap(get::<Vec<u8>>(row, index)?, |bytes| Cell::Bytes(b64(&bytes))),
        Kind::Uuid => wrap(get::<uuid::Uuid>(row, index)?, |v| Cell::Uuid(v.to_string())),
        Kind::Timestamp => wrap(get::<DateTime<Utc>>(row, index)?, |v| Cell::Timestamp(rfc3339(&v))),
        Kind::NaiveTimestamp => wrap(get::<NaiveDateTime>(row, index)?, |v| {
            Cell::Timestamp(rfc3339(&v.and_utc()))
        }),
    })
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|at| at.and_utc())
        })
}

/// Converts `cell` to a value for a column declared `decl` on `backend`.
fn to_value(backend: DbBackend, decl: &str, cell: &Cell) -> Result<Value, String> {
    let kind = kind(backend, decl);
    let bad = || format!("cannot store {cell:?} in a column of type {decl}");
    let int = |cell: &Cell| -> Result<Option<i64>, String> {
        match cell {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            Cell::Bool(v) => Ok(Some(i64::from(*v))),
            Cell::Text(text) => text.trim().parse().map(Some).map_err(|_| bad()),
            _ => Err(bad()),
        }
    };
    let real = |cell: &Cell| -> Result<Option<f64>, String> {
        match cell {
            Cell::Null => Ok(None),
            Cell::Real(v) => Ok(Some(*v)),
            #[allow(clippy::cast_precision_loss)]
            Cell::Int(v) => Ok(Some(*v as f64)),
            Cell::Text(text) => text.trim().parse().map(Some).map_err(|_| bad()),
            _ => Err(bad()),
        }
    };
    let time = |cell: &Cell| -> Result<Option<DateTime<Utc>>, String> {
        match cell {
            Cell::Null => Ok(None),
            Cell::Timestamp(text) | Cell::Text(text) => parse_time(text).map(Some).ok_or_else(bad),
            _ => Err(bad()),
        }
    };
    let sqlite = backend != DbBackend::Postgres;
    Ok(match kind {
        Kind::Bool => Value::Bool(match cell {
            Cell::Null => None,
            Cell::Bool(v) => Some(*v),
            Cell::Int(v) => Some(*v != 0),
            Cell::Text(text) => Some(matches!(text.as_str(), "t" | "true" | "1" | "TRUE")),
            _ => return Err(bad()),
        }),
        Kind::Int16 => Value::SmallInt(int(cell)?.map(i16::try_from).transpose().map_err(|_| bad())?),
        Kind::Int32 => Value::Int(int(cell)?.map(i32::try_from).transpose().map_err(|_| bad())?),
        Kind::Int => Value::BigInt(int(cell)?),
        #[allow(clippy::cast_possible_truncation)]
        Kind::Real32 => Value::Float(real(cell)?.map(|v| v as f32)),
        Kind::Real => Value::Double(real(cell)?),
        Kind::Text | Kind::Other => Value::String(match cell {
            Cell::Null => None,
            Cell::Text(v) | Cell::Uuid(v) | Cell::Timestamp(v) => Some(v.clone()),
            Cell::Int(v) => Some(v.to_string()),
            Cell::Real(v) => Some(v.to_string()),
            Cell::Bool(v) => Some(v.to_string()),
            Cell::Bytes(v) => Some(String::from_utf8(unb64(v).map_err(|_| bad())?).map_err(|_| bad())?),
        }),
        Kind::Bytes => Value::Bytes(match cell {
            Cell::Null => None,
            Cell::Bytes(v) => Some(unb64(v).map_err(|_| bad())?),
            Cell::Text(v) => Some(v.clone().into_bytes()),
            _ => return Err(bad()),
        }),
        Kind::Uuid => match cell {
            Cell::Null => Value::Uuid(None),
            // SQLite to SQLite: keep the stored form.
            Cell::Bytes(v) if sqlite => Value::Bytes(Some(unb64(v).map_err(|_| bad())?)),
            Cell::Text(v) if sqlite => Value::String(Some(v.clone())),
            Cell::Uuid(v) | Cell::Text(v) => Value::Uuid(Some(uuid::Uuid::parse_str(v).map_err(|_| bad())?)),
            Cell::Bytes(v) => Value::Uuid(Some(
                uuid::Uuid::from_slice(&unb64(v).map_err(|_| bad())?).map_err(|_| bad())?,
            )),
            _ => return Err(bad()),
        },
        Kind::Timestamp => match cell {
            // SQLite to SQLite: keep the stored text exactly.
            Cell::Text(v) if sqlite => Value::String(Some(v.clone())),
            _ => Value::ChronoDateTimeUtc(time(cell)?),
        },
        Kind::NaiveTimestamp => Value::ChronoDateTime(time(cell)?.map(|at| at.naive_utc())),
    })
}

pub(crate) fn unb64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text)
}

/// Most bound parameters per INSERT statement (below SQLite's and PostgreSQL's limits).
const MAX_PARAMS: usize = 900;

/// Inserts `rows` (cells in `source` column order) into `table`, whose columns are `target`.
/// Every source column must exist in the target; target columns missing from the source get
/// their defaults.
pub async fn write_rows(
    db: &impl ConnectionTrait,
    table: &str,
    source: &[Column],
    target: &[Column],
    rows: &[Vec<Cell>],
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let decls: Vec<&str> = source
        .iter()
        .map(|column| {
            target
                .iter()
                .find(|t| t.name == column.name)
                .map(|t| t.decl.as_str())
                .ok_or_else(|| DbErr::Custom(format!("table {table} has no column {}", column.name)))
        })
        .collect::<Result<_, _>>()?;
    if source.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = source.iter().map(|column| quote(&column.name)).collect();
    let per_statement = (MAX_PARAMS / source.len()).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut values = Vec::with_capacity(chunk.len() * source.len());
        let mut tuples = Vec::with_capacity(chunk.len());
        for row in chunk {
            if row.len() != source.len() {
                return Err(DbErr::Custom(format!(
                    "a row of {table} has {} values for {} columns",
                    row.len(),
                    source.len()
                )));
            }
            let mut placeholders = Vec::with_capacity(row.len());
            for (cell, decl) in row.iter().zip(&decls) {
                values.push(to_value(backend, decl, cell).map_err(|error| DbErr::Custom(format!("{table}: {error}")))?);
                placeholders.push(match backend {
                    DbBackend::Postgres if kind(backend, decl) == Kind::Other => {
                        format!("CAST(${} AS {})", values.len(), quote(decl))
                    }
                    DbBackend::Postgres => format!("${}", values.len()),
                    _ => "?".to_owned(),
                });
            }
            tuples.push(format!("({})", placeholders.join(", ")));
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            quote(table),
            names.join(", "),
            tuples.join(", ")
        );
        db.execute_raw(statement(backend, &sql, values)).await?;
    }
    if backend == DbBackend::Postgres {
        reset_sequences(db, table).await?;
    }
    Ok(())
}

/// After explicit ids were inserted, moves serial and identity sequences past them.
async fn reset_sequences(db: &impl ConnectionTrait, table: &str) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let serials = db
        .query_all_raw(statement(
            backend,
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() \
             AND table_name = $1 AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')",
            vec![table.into()],
        ))
        .await?;
    for row in serials {
        let column = row.try_get_by_index::<String>(0)?;
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({c}), 0) + 1, false) FROM {t}",
            c = quote(&column),
            t = quote(table)
        );
        db.query_one_raw(statement(backend, &sql, vec![quote(table).into(), column.into()]))
            .await?;
    }
    Ok(())
}

/// Deletes every row of `table` (for `restore --force`).
pub async fn clear(db: &impl ConnectionTrait, table: &str) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    db.execute_raw(statement(backend, &format!("DELETE FROM {}", quote(table)), vec![]))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn postgres_cells_convert_to_sqlite_and_back() {
        let at = "2026-03-01T10:20:30.123456Z";
        assert_eq!(
            to_value(
                DbBackend::Postgres,
                "timestamptz",
                &Cell::Text("2026-03-01T10:20:30.123456+00:00".into())
            )
            .unwrap(),
            Value::ChronoDateTimeUtc(parse_time(at))
        );
        assert_eq!(
            to_value(
                DbBackend::Sqlite,
                "timestamp_with_timezone_text",
                &Cell::Timestamp(at.into())
            )
            .unwrap(),
            Value::ChronoDateTimeUtc(parse_time(at))
        );
        assert_eq!(
            to_value(DbBackend::Postgres, "bool", &Cell::Int(1)).unwrap(),
            Value::Bool(Some(true))
        );
        assert_eq!(
            to_value(DbBackend::Postgres, "int4", &Cell::Int(7)).unwrap(),
            Value::Int(Some(7))
        );
        assert!(to_value(DbBackend::Postgres, "int2", &Cell::Int(1 << 20)).is_err());
        assert_eq!(
            to_value(DbBackend::Postgres, "bytea", &Cell::Bytes(b64(b"\x00\x01"))).unwrap(),
            Value::Bytes(Some(vec![0, 1]))
        );
        assert_eq!(
            to_value(DbBackend::Sqlite, "text", &Cell::Null).unwrap(),
            Value::String(None)
        );
    }
}

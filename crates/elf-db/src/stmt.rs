//! The `db` key: the statements a record asks for, and the results added to it.
//!
//! # Wire format
//!
//! `db` is one statement object, or an array of them; all the statements of a record run in
//! one transaction, and either all of them are kept or none. Results are added to each
//! statement object (an existing result key is replaced); every other key keeps its value and
//! place.
//!
//! `elf-db insert` takes insert statements:
//!
//! ```json
//! {"db":{"table":"learnings","values":{"type":"failure","title":"t"}}}
//! {"db":{"table":"learnings","values":{"type":"failure","title":"t"},"id":42}}
//! ```
//!
//! - `table`: an existing table (or view), matched without regard to ASCII case;
//! - `values`: an object, one row: its keys are columns of the table; or an array of such
//!   objects, several rows;
//! - result `id`: the new row's rowid, for one row; `ids`: the rowids in order, for an array.
//!   A WITHOUT ROWID table has no rowid and a view gives none (its INSTEAD OF trigger takes the
//!   row, unseen): neither result is added for them, never a stale or made-up number.
//!
//! Values are bound parameters, never SQL text: a string is TEXT, an integer INTEGER, a number
//! with a fraction or exponent REAL (the nearest double), `true`/`false` 1/0, `null` NULL, and
//! an object or array its JSON text. A number that SQLite would not store as written is a bad
//! record naming its column or parameter: an integer beyond 64 bits, a number whose double
//! would be infinite (`1e400`) or 0 when it is not (`1.5e-400`); see [`crate::value::number`].
//!
//! `elf-db exec` takes SQL statements:
//!
//! ```json
//! {"db":{"sql":"UPDATE heuristics SET confidence = :c WHERE id = :id","params":{"c":0.9,"id":7}}}
//! {"db":{"sql":"UPDATE heuristics SET confidence = :c WHERE id = :id","params":{"c":0.9,"id":7},"changes":1}}
//! ```
//!
//! - `sql`: exactly one statement; transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT,
//!   RELEASE), ATTACH, DETACH and PRAGMA are refused;
//! - `params`: an object binding `:name`, `@name` or `$name` (keys with or without the sigil),
//!   or an array binding `?` parameters in order. Every parameter must be given and every
//!   given one used;
//! - results: `changes` (rows changed by an INSERT, UPDATE or DELETE; 0 for a query), `id`
//!   (the rowid of the row the statement itself inserted into a rowid table), `rows` (the rows
//!   the statement returned, with RETURNING or a SELECT, typed and named as by `elf-db query`:
//!   a repeated column name gets `:2`, `:3` appended).
//!
//! With `--key NAME`, the statements are read from NAME instead of `db`, and the results
//! added there.
//!
//! # References
//!
//! A value inside a statement object may be a reference (`elf_core::refs`): `{"$ref":"/p"}`
//! or `{"$join":[...]}`, resolved against the whole record, as it reached elf-db, just before
//! that statement runs; the results are then added to the statement object as it was given,
//! so the record keeps its references as written:
//!
//! ```json
//! {"write":{"path":"m/x-2.md"},"fix":{"sql":"UPDATE t SET p = :p","params":{"p":{"$ref":"/write/path"}}}}
//! {"write":{"path":"m/x-2.md"},"fix":{"sql":"UPDATE t SET p = :p","params":{"p":{"$ref":"/write/path"}},"changes":1}}
//! ```
//!
//! A statement object itself, and `sql`, may not be references: results could not be added to
//! the one, and the other would make SQL text from values. A statement does not see the
//! results of the statements before it in the same record.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use elf_core::record::{self, Record};
use elf_core::{Error, IoContext, Result, refs};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, ToSql};
use serde_json::{Map, Value};

use crate::conn::{self, Guard, Options};
use crate::value;

/// The statements `insert` or `exec` accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `table` and `values`.
    Insert,
    /// `sql` and `params`.
    Exec,
}

/// The results of one statement object, to merge into it.
pub type Results = Map<String, Value>;

/// A table's real name and columns, as the schema has them.
#[derive(Debug)]
pub struct Table {
    name: String,
    columns: Vec<String>,
    simple: bool,
    rowid: bool,
    view: bool,
}

impl Table {
    /// True when one INSERT into it either succeeds or leaves nothing behind: no triggers
    /// (a trigger may write before a RAISE(FAIL)) and no ON CONFLICT FAIL clause.
    pub fn simple(&self) -> bool {
        self.simple
    }

    /// True when a row inserted into it has a rowid to report: not a view, not a WITHOUT
    /// ROWID table.
    pub fn has_rowid(&self) -> bool {
        self.rowid
    }

    fn column(&self, key: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|c| c.eq_ignore_ascii_case(key))
            .map(String::as_str)
    }
}

/// The schema, read as needed and cached for the run, and the INSERT statement of the last
/// row's shape, kept prepared: a bulk load of same-shaped rows neither rebuilds nor looks up
/// its statement.
#[derive(Default)]
pub struct Schema<'c> {
    tables: Vec<Rc<Table>>,
    sql: String,
    cols: Vec<usize>,
    last: Option<Shape<'c>>,
}

/// A table and the keys of a row, in order, with the statement that inserts such a row.
struct Shape<'c> {
    table: Rc<Table>,
    keys: Vec<String>,
    stmt: CachedStatement<'c>,
}

impl Shape<'_> {
    fn fits<'k>(&self, table: &Rc<Table>, keys: impl Iterator<Item = &'k str>, n: usize) -> bool {
        Rc::ptr_eq(&self.table, table)
            && self.keys.len() == n
            && self.keys.iter().zip(keys).all(|(a, b)| a == b)
    }
}

impl<'c> Schema<'c> {
    /// A table by name. A name not in the cache is looked up again (another process may
    /// have created it since); an unknown one is a data error listing the tables there are.
    pub fn table(&mut self, conn: &Connection, name: &str) -> Result<Rc<Table>> {
        if let Some(t) = self
            .tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
        {
            return Ok(Rc::clone(t));
        }
        conn::guard(Guard::Own);
        let found: Option<String> = conn
            .prepare_cached(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE",
            )
            .and_then(|mut s| {
                let mut rows = s.query([name])?;
                rows.next()?.map(|r| r.get::<_, String>(0)).transpose()
            })
            .map_err(conn::error)?;
        let Some(real) = found.filter(|n| !is_internal(n)) else {
            let names = self.names(conn)?;
            return Err(Error::data(format!(
                "no table named '{name}' (tables: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        let columns: Vec<String> = conn
            .prepare_cached("SELECT name FROM pragma_table_info(?1)")
            .and_then(|mut s| s.query_map([&real], |r| r.get::<_, String>(0))?.collect())
            .map_err(conn::error)?;
        let (triggers, sql): (i64, String) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1), \
                 coalesce((SELECT sql FROM sqlite_master WHERE name = ?1 AND type IN ('table', 'view')), '')",
                [&real],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(conn::error)?;
        let simple = triggers == 0 && !sql.to_ascii_uppercase().contains("FAIL");
        let (kind, without_rowid): (String, bool) = conn
            .query_row(
                "SELECT type, wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
                [&real],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(conn::error)?;
        let view = kind == "view";
        let t = Rc::new(Table {
            name: real,
            columns,
            simple,
            rowid: !view && !without_rowid,
            view,
        });
        self.tables.push(Rc::clone(&t));
        Ok(t)
    }

    /// Forgets the cached tables (after a failure that a schema change could explain).
    pub fn forget(&mut self) {
        self.last = None;
        self.tables.clear();
    }

    fn names(&self, conn: &Connection) -> Result<Vec<String>> {
        conn::guard(Guard::Own);
        let names: Vec<String> = conn
            .prepare_cached(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name",
            )
            .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
            .map_err(conn::error)?;
        Ok(names.into_iter().filter(|n| !is_internal(n)).collect())
    }

    /// Inserts one row; returns its rowid (none for a view or a WITHOUT ROWID table).
    pub fn insert_row(
        &mut self,
        conn: &'c Connection,
        table: &Rc<Table>,
        values: &Map<String, Value>,
    ) -> Result<Option<i64>> {
        self.insert_with(
            conn,
            table,
            values.keys().map(String::as_str),
            values.len(),
            |st| {
                for (i, (k, v)) in values.iter().enumerate() {
                    let b = Bind::new(v).map_err(|e| e.context(format!("column {k}")))?;
                    st.raw_bind_parameter(i + 1, b).map_err(conn::error)?;
                }
                Ok(())
            },
        )
    }

    /// True when the INSERT kept prepared is the one for a row of `table` with these keys, in
    /// this order.
    pub fn fits<'k>(
        &self,
        table: &Rc<Table>,
        keys: impl Iterator<Item = &'k str>,
        n: usize,
    ) -> bool {
        self.last.as_ref().is_some_and(|s| s.fits(table, keys, n))
    }

    /// Inserts one row, given its `n` keys (distinct, in order) and a function binding its
    /// values in the same order; returns its rowid, or none for a view (whose INSTEAD OF
    /// trigger did whatever it does, unseen) or a WITHOUT ROWID table.
    pub fn insert_with<'k>(
        &mut self,
        conn: &'c Connection,
        table: &Rc<Table>,
        keys: impl Iterator<Item = &'k str> + Clone,
        n: usize,
        bind: impl FnOnce(&mut CachedStatement<'c>) -> Result<()>,
    ) -> Result<Option<i64>> {
        let shape = match self.last.take() {
            Some(shape) if shape.fits(table, keys.clone(), n) => shape,
            _ => self.prepare(conn, table, keys)?,
        };
        let st = &mut self.last.insert(shape).stmt;
        bind(st)?;
        conn::guard(Guard::Own);
        let changes = st.raw_execute().map_err(conn::error)?;
        // SQLite does not count the rows an INSTEAD OF trigger writes for a view.
        if table.view {
            return Ok(None);
        }
        if changes == 0 {
            return Err(Error::data(format!(
                "the row was not inserted into {}: an ON CONFLICT IGNORE constraint or a trigger's RAISE(IGNORE) dropped it",
                table.name
            )));
        }
        Ok(table.rowid.then(|| conn.last_insert_rowid()))
    }
}

impl<'c> Schema<'c> {
    /// Checks a row's keys against the table and prepares the INSERT for its shape.
    fn prepare<'k>(
        &mut self,
        conn: &'c Connection,
        table: &Rc<Table>,
        keys: impl Iterator<Item = &'k str> + Clone,
    ) -> Result<Shape<'c>> {
        self.cols.clear();
        for key in keys.clone() {
            let Some(col) = table.column(key) else {
                return Err(Error::data(format!(
                    "table {} has no column named '{key}' (columns: {})",
                    table.name,
                    table.columns.join(", ")
                )));
            };
            let idx = table.columns.iter().position(|c| c == col).unwrap_or(0);
            if self.cols.contains(&idx) {
                return Err(Error::data(format!(
                    "column {col} is given twice (names ignore case)"
                )));
            }
            self.cols.push(idx);
        }
        self.sql.clear();
        self.sql.push_str("INSERT INTO ");
        quote(&mut self.sql, &table.name);
        if self.cols.is_empty() {
            self.sql.push_str(" DEFAULT VALUES");
        } else {
            self.sql.push('(');
            for (i, &c) in self.cols.iter().enumerate() {
                if i > 0 {
                    self.sql.push(',');
                }
                quote(&mut self.sql, &table.columns[c]);
            }
            self.sql.push_str(") VALUES (");
            for i in 0..self.cols.len() {
                self.sql.push_str(if i == 0 { "?" } else { ",?" });
            }
            self.sql.push(')');
        }
        conn::guard(Guard::Own);
        let stmt = conn.prepare_cached(&self.sql).map_err(conn::error)?;
        Ok(Shape {
            table: Rc::clone(table),
            keys: keys.map(str::to_string).collect(),
            stmt,
        })
    }
}

/// Tables the record form may not write: SQLite's own and the journal.
fn is_internal(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("sqlite_") || lower == crate::journal::TABLE
}

/// Appends `"name"` with `"` doubled.
pub fn quote(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// A JSON value as a bound parameter.
pub struct Bind<'a>(ValueRef<'a>, Option<String>);

impl<'a> Bind<'a> {
    /// Converts a value; a number that SQLite cannot hold as it is written is a data error
    /// (see [`crate::value::number`]).
    pub fn new(v: &'a Value) -> Result<Bind<'a>> {
        Ok(match v {
            Value::Null => Bind(ValueRef::Null, None),
            Value::Bool(b) => Bind(ValueRef::Integer(i64::from(*b)), None),
            Value::String(s) => Bind(ValueRef::Text(s.as_bytes()), None),
            Value::Number(n) => Bind(value::number(&n.to_string())?, None),
            Value::Array(_) | Value::Object(_) => Bind(ValueRef::Null, Some(v.to_string())),
        })
    }
}

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match &self.1 {
            Some(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            None => ToSqlOutput::Borrowed(self.0),
        })
    }
}

/// The statement objects of a record's statement value (`db`, or the key `--key` names).
fn objects<'v>(name: &str, db: &'v Value) -> Result<Vec<&'v Value>> {
    match db {
        Value::Object(_) => Ok(vec![db]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(_) => Ok(v),
                other => Err(Error::data(format!(
                    "{name}[{i}] must be an object, found {}",
                    record::kind(other)
                ))),
            })
            .collect(),
        other => Err(Error::data(format!(
            "{name} must be an object or an array of objects, found {}",
            record::kind(other)
        ))),
    }
}

/// Where a statement is, for messages: `db` or `db[2]`.
fn place(name: &str, db: &Value, i: usize) -> String {
    if db.is_array() {
        format!("{name}[{i}]")
    } else {
        name.to_string()
    }
}

/// Runs the statements of a record's statement value `db` (found under `name` in `rec`) and
/// returns each statement object's results, in order, without touching the record (see
/// [`fill`]). References in a statement object are resolved against `rec` just before it runs.
pub fn apply<'c>(
    conn: &'c Connection,
    schema: &mut Schema<'c>,
    kind: Kind,
    name: &str,
    rec: &Record,
    db: &Value,
) -> Result<Vec<Results>> {
    let objs = objects(name, db)?;
    let mut out = Vec::with_capacity(objs.len());
    for (i, obj) in objs.into_iter().enumerate() {
        let r = statement(conn, schema, kind, rec, obj);
        out.push(r.map_err(|e| e.context(place(name, db, i)))?);
    }
    Ok(out)
}

/// True when `v` is a reference object (`$ref` or `$join` its one key).
pub fn is_reference(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.len() == 1 && (m.contains_key(refs::REF) || m.contains_key(refs::JOIN))
        }
        _ => false,
    }
}

/// One statement object, its references resolved.
fn statement<'c>(
    conn: &'c Connection,
    schema: &mut Schema<'c>,
    kind: Kind,
    rec: &Record,
    obj: &Value,
) -> Result<Results> {
    if is_reference(obj) {
        return Err(Error::data(
            "a statement object cannot be a reference (its results are added to it); \
             put references in its values or params",
        ));
    }
    if kind == Kind::Exec && obj.get("sql").is_some_and(is_reference) {
        return Err(Error::data(
            "sql cannot be a reference: SQL text is never made from the record's values; \
             bind them through params",
        ));
    }
    let resolved = refs::resolve(rec, obj)?;
    let Value::Object(obj) = resolved.as_ref() else {
        return Err(Error::internal(
            "a statement object resolved to something else",
        ));
    };
    match kind {
        Kind::Insert => insert(conn, schema, obj),
        Kind::Exec => exec(conn, obj),
    }
}

/// Adds results to the statement objects of `db` (found under `name`).
pub fn fill(name: &str, db: &mut Value, results: &[Results]) -> Result<()> {
    let count = match db {
        Value::Array(a) => a.len(),
        Value::Object(_) => 1,
        _ => 0,
    };
    if count != results.len() {
        return Err(Error::data(format!(
            "{name} holds {count} statement(s) but its key was journaled with {}",
            results.len()
        )));
    }
    let put = |obj: &mut Value, r: &Results| {
        if let Value::Object(m) = obj {
            for (k, v) in r {
                m.insert(k.clone(), v.clone());
            }
        }
    };
    match db {
        Value::Array(items) => items.iter_mut().zip(results).for_each(|(o, r)| put(o, r)),
        obj => put(obj, &results[0]),
    }
    Ok(())
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<()> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Error::data(format!("unknown key '{k}' ({what})"))),
        None => Ok(()),
    }
}

fn insert<'c>(
    conn: &'c Connection,
    schema: &mut Schema<'c>,
    obj: &Map<String, Value>,
) -> Result<Results> {
    check_keys(
        obj,
        &["table", "values", "id", "ids"],
        "insert takes table and values; use exec for sql",
    )?;
    let name = match obj.get("table") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(Error::data(format!(
                "table must be a string, found {}",
                record::kind(other)
            )));
        }
        None => return Err(Error::data("table is missing")),
    };
    let table = schema.table(conn, name)?;
    let mut results = Map::new();
    match obj.get("values") {
        Some(Value::Object(values)) => {
            if let Some(id) = schema.insert_row(conn, &table, values)? {
                results.insert("id".into(), Value::from(id));
            }
        }
        Some(Value::Array(rows)) => {
            let mut ids = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let Value::Object(values) = row else {
                    return Err(Error::data(format!(
                        "values[{i}] must be an object, found {}",
                        record::kind(row)
                    )));
                };
                let id = schema
                    .insert_row(conn, &table, values)
                    .map_err(|e| e.context(format!("values[{i}]")))?;
                ids.extend(id.map(Value::from));
            }
            if table.has_rowid() {
                results.insert("ids".into(), Value::Array(ids));
            }
        }
        Some(other) => {
            return Err(Error::data(format!(
                "values must be an object or an array of objects, found {}",
                record::kind(other)
            )));
        }
        None => return Err(Error::data("values is missing")),
    }
    Ok(results)
}

fn exec(conn: &Connection, obj: &Map<String, Value>) -> Result<Results> {
    check_keys(
        obj,
        &["sql", "params", "changes", "id", "rows"],
        "exec takes sql and params; use insert for table",
    )?;
    let sql = match obj.get("sql") {
        // SQLite stops reading at a NUL: what follows would be dropped without a word.
        Some(Value::String(s)) if s.contains('\0') => {
            return Err(Error::data("sql contains a NUL character"));
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) => return Err(Error::data("sql is empty")),
        Some(other) => {
            return Err(Error::data(format!(
                "sql must be a string, found {}",
                record::kind(other)
            )));
        }
        None => return Err(Error::data("sql is missing")),
    };
    let params = obj.get("params").filter(|p| !p.is_null());
    conn::guard(Guard::Record);
    let result = run_sql(conn, sql, params);
    conn::guard(Guard::Own);
    result
}

fn run_sql(conn: &Connection, sql: &str, params: Option<&Value>) -> Result<Results> {
    let mut st = conn.prepare_cached(sql).map_err(conn::error)?;
    // SQLite prepares text of only comments and semicolons as no statement at all, which
    // would then fail as "API misuse".
    if st.expanded_sql().is_none() {
        return Err(Error::data(
            "sql holds no statement, only comments or semicolons",
        ));
    }
    let n = st.parameter_count();
    match params {
        None if n > 0 => {
            let name = st.parameter_name(1).unwrap_or("?").to_string();
            return Err(Error::data(format!(
                "sql has parameters ({name}...) but params is missing"
            )));
        }
        None => {}
        Some(Value::Array(items)) => {
            if items.len() != n {
                return Err(Error::data(format!(
                    "sql has {n} parameter(s), params has {}",
                    items.len()
                )));
            }
            for (i, v) in items.iter().enumerate() {
                let b = Bind::new(v).map_err(|e| e.context(format!("params[{i}]")))?;
                st.raw_bind_parameter(i + 1, b).map_err(conn::error)?;
            }
        }
        Some(Value::Object(map)) => {
            // `:a`, `@a` and `$a` are three parameters of SQLite's, all bound to params' `a`.
            let mut used = vec![false; map.len()];
            for (i, k) in map.keys().enumerate() {
                if let Some(other) = map.keys().take(i).find(|o| unsigil(o) == unsigil(k)) {
                    return Err(Error::data(format!(
                        "params gives '{other}' and '{k}', the same parameter"
                    )));
                }
            }
            for i in 1..=n {
                let Some(name) = st.parameter_name(i) else {
                    return Err(Error::data(
                        "sql uses positional parameters (?): give params as an array",
                    ));
                };
                let bare = &name[1..];
                let found = map
                    .iter()
                    .enumerate()
                    .find(|(_, (k, _))| unsigil(k) == bare);
                let Some((at, (_, v))) = found else {
                    return Err(Error::data(format!("params has no value for {name}")));
                };
                used[at] = true;
                let b = Bind::new(v).map_err(|e| e.context(format!("params {name}")))?;
                st.raw_bind_parameter(i, b).map_err(conn::error)?;
            }
            if let Some((k, _)) = map.iter().zip(&used).find(|(_, u)| !**u).map(|(kv, _)| kv) {
                return Err(Error::data(format!(
                    "params has '{k}', which the sql does not use"
                )));
            }
        }
        Some(other) => {
            return Err(Error::data(format!(
                "params must be an object or an array, found {}",
                record::kind(other)
            )));
        }
    }
    set_last_rowid(conn, NO_ROWID);
    let mut results = Map::new();
    let readonly = st.readonly();
    let changes;
    if st.column_count() > 0 {
        // A repeated name gets :2, :3 appended, as `elf-db query` prints it.
        let names = crate::value::unique(&st.column_names());
        let mut rows_out = Vec::new();
        let mut rows = st.raw_query();
        while let Some(row) = rows.next().map_err(conn::error)? {
            let mut obj = Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = row.get_ref(i).map_err(conn::error)?;
                obj.insert(name.clone(), crate::value::to_json(v));
            }
            rows_out.push(Value::Object(obj));
        }
        drop(rows);
        changes = if readonly { 0 } else { conn.changes() };
        results.insert("changes".into(), Value::from(changes));
        add_id(conn, changes, &mut results);
        results.insert("rows".into(), Value::Array(rows_out));
    } else {
        changes = st.raw_execute().map_err(conn::error)? as u64;
        results.insert("changes".into(), Value::from(changes));
        add_id(conn, changes, &mut results);
    }
    Ok(results)
}

/// A params key without its `:`, `@` or `$`.
fn unsigil(key: &str) -> &str {
    key.strip_prefix([':', '@', '$']).unwrap_or(key)
}

/// What `last_insert_rowid` is set to before a statement runs, so that a statement that
/// inserted no row into a rowid table (an UPDATE, an insert into a WITHOUT ROWID table or
/// through a view's INSTEAD OF trigger, whose own inserts SQLite forgets when the trigger
/// ends) is seen to have none, whatever an earlier statement (or an earlier run of this one,
/// rolled back) left there. A row whose rowid really is this number gets no `id`.
const NO_ROWID: i64 = i64::MIN;

fn set_last_rowid(conn: &Connection, rowid: i64) {
    // SAFETY: the handle is valid while `conn` lives, and the connection is used by this one
    // thread only; the call only sets a number SQLite keeps for the connection.
    unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(conn.handle(), rowid) };
}

/// Adds `id`: the rowid of the row the statement inserted, when it inserted one.
fn add_id(conn: &Connection, changes: u64, results: &mut Results) {
    let after = conn.last_insert_rowid();
    if changes > 0 && after != NO_ROWID {
        results.insert("id".into(), Value::from(after));
    }
}

/// A file of SQL statements (a schema or a migration), read and split, each statement with the
/// line it starts on.
#[derive(Debug, Clone)]
pub struct SqlFile {
    path: PathBuf,
    statements: Vec<(u64, String)>,
}

impl SqlFile {
    /// Reads and splits a file: a missing one is 66, one that is not UTF-8 or holds a NUL 65.
    pub fn read(path: &Path) -> Result<SqlFile> {
        let bytes = std::fs::read(path).with_ctx(|| format!("reading {}", conn::show(path)))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::data(format!(
                "{} is not UTF-8 (at byte {})",
                conn::show(path),
                e.utf8_error().valid_up_to() + 1
            ))
        })?;
        let statements = split_statements(&text).map_err(|e| e.context(conn::show(path)))?;
        Ok(SqlFile {
            path: path.to_path_buf(),
            statements,
        })
    }

    /// The file's path, for messages.
    pub fn show(&self) -> String {
        conn::show(&self.path)
    }

    /// Runs the statements in the caller's transaction (no transaction control of their own);
    /// the first that fails gives its line and its error.
    pub fn run(&self, db: &Connection) -> std::result::Result<(), (u64, Error)> {
        for (line, chunk) in &self.statements {
            conn::guard(Guard::File);
            let r = db.execute_batch(chunk);
            conn::guard(Guard::Own);
            r.map_err(|e| (*line, conn::error(e)))?;
        }
        Ok(())
    }
}

/// `exec --file`: runs a schema or migration file in one transaction.
pub fn exec_file(o: &Options, path: &Path) -> Result<u8> {
    let file = SqlFile::read(path)?;
    let db = conn::open(o, conn::Mode::Create)?;
    conn::begin(&db, o.busy)?;
    if let Err((line, e)) = file.run(&db) {
        conn::rollback(&db);
        return Err(e.context(file.show()).at_line(line));
    }
    conn::commit(&db)?;
    Ok(elf_core::exit::OK)
}

/// Splits SQL text into complete statements (as the sqlite3 shell does, with
/// `sqlite3_complete`), each with the line it starts on.
pub fn split_statements(text: &str) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut start = 0u64;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i as u64 + 1;
        if line.contains('\0') {
            return Err(Error::data("NUL byte in SQL").at_line(n));
        }
        if buf.trim().is_empty() {
            buf.clear();
            start = n;
        }
        buf.push_str(line);
        if line.contains(';') && complete(&buf) {
            out.push((start, std::mem::take(&mut buf)));
        }
    }
    if !buf.trim().is_empty() {
        out.push((start, buf));
    }
    Ok(out)
}

/// `sqlite3_complete`: true when the text ends a statement (a `;` outside strings, comments
/// and trigger bodies).
fn complete(sql: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(sql) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; sqlite3_complete
    // only reads it.
    unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        let mut s = String::new();
        quote(&mut s, "a\"b; DROP TABLE x");
        assert_eq!(s, "\"a\"\"b; DROP TABLE x\"");
    }

    #[test]
    fn splits_statements_with_their_lines() {
        let sql = "-- c\nCREATE TABLE a(x);\n\nCREATE TRIGGER t AFTER INSERT ON a BEGIN\n  SELECT ';';\nEND;\nINSERT INTO a VALUES(1)";
        let got = split_statements(sql).unwrap_or_default();
        let lines: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 4, 7]);
        assert!(got[1].1.trim_end().ends_with("END;"));
    }

    #[test]
    fn values_bind_by_type() {
        let v: Value = serde_json::from_str(
            r#"[null,true,7,-2.5,"s",123456789012345678901234567890,{"a":[1]},1e999,1.5e-400,-0.0,-0,0e-999,5e-324,1.0000000000000000001,-9223372036854775808]"#,
        )
        .unwrap_or_default();
        let items = v.as_array().cloned().unwrap_or_default();
        let got: Vec<String> = items
            .iter()
            .map(|x| match Bind::new(x) {
                Ok(b) => match b.to_sql() {
                    Ok(ToSqlOutput::Borrowed(r)) => format!("{r:?}"),
                    _ => "?".into(),
                },
                Err(e) => format!("err {}", e.code()),
            })
            .collect();
        assert_eq!(got[0], "Null");
        assert_eq!(got[1], "Integer(1)");
        assert_eq!(got[2], "Integer(7)");
        assert_eq!(got[3], "Real(-2.5)");
        assert!(got[4].starts_with("Text"));
        assert_eq!(got[5], "err 65", "an integer beyond 64 bits");
        assert!(got[6].starts_with("Text"));
        assert_eq!(got[7], "err 65", "a number whose double is infinite");
        assert_eq!(got[8], "err 65", "a number not 0 whose double is 0");
        assert_eq!(got[9], "Real(-0.0)");
        assert_eq!(got[10], "Integer(0)");
        assert_eq!(got[11], "Real(0.0)");
        assert_eq!(got[12], "Real(5e-324)");
        assert_eq!(got[13], "Real(1.0)", "the nearest double");
        assert_eq!(got[14], "Integer(-9223372036854775808)");
    }
}

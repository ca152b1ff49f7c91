//! The `commit` key of a record: which paths to commit and with which message, checked
//! completely before anything is done. A pure function of the record and the work tree's
//! path (the paths are looked at on disk only to refuse symbolic links on the way), so that
//! it can be fuzzed on its own (`fuzz/fuzz_targets/commit_record.rs`).
//!
//! The values in `commit` may be references to other parts of the record (`$ref`, `$join`,
//! see `elf_core::refs`), resolved here, against the record as it reaches elf-commit; the
//! `commit` value itself must be an object as written, since the results go into it.
//!
//! The appends elf-write reported for the record (`write` objects with `mode` "append" and
//! the results `path`, `end` and `bytes`) are read too, leniently: one that is not complete
//! is simply not an [`Append`], and its file is committed whole, as any other path.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use elf_core::marker::marker;
use elf_core::record::{self, Record};
use elf_core::refs;
use elf_core::{Error, Result};

use crate::message::Message;
use crate::paths;

/// What one record (or the direct form) asks for.
#[derive(Debug, Clone)]
pub struct Job {
    /// Paths relative to the work tree, normalised.
    pub paths: Vec<PathBuf>,
    /// The cleaned message.
    pub message: Message,
    /// The entries the record appended, as elf-write reported them.
    pub appends: Vec<Append>,
}

/// An entry appended for a record: where it ends, and what must be just before that end for
/// the record's commit to take the file's first `end` bytes as its own change (see
/// `elf_core::marker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The file, as `write.path` names it.
    pub path: PathBuf,
    /// `write.end`: the size of the file's prefix that ends with the entry.
    pub end: u64,
    /// `write.bytes`: the size of the content.
    pub bytes: u64,
    /// The marker line that starts the entry.
    pub marker: Vec<u8>,
}

/// The commit a record asks for; `None` when it asks for none.
pub fn job_of(rec: &Record, default_message: Option<&str>, workdir: &Path) -> Result<Option<Job>> {
    let resolved: Option<Cow<'_, Value>> = match rec.get("commit") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) if c.contains_key(refs::REF) || c.contains_key(refs::JOIN) => {
            return Err(Error::data(
                "commit must be an object, not a reference (references go in its fields)",
            ));
        }
        Some(v @ Value::Object(_)) => Some(refs::resolve(rec, v).map_err(|e| e.context("commit"))?),
        Some(other) => {
            return Err(Error::data(format!(
                "commit must be an object, found {}",
                record::kind(other)
            )));
        }
    };
    let commit = match resolved.as_deref() {
        Some(Value::Object(c)) => Some(c),
        _ => None,
    };
    let named: Vec<&str> = match commit.and_then(|c| c.get("paths")) {
        None | Some(Value::Null) => written_paths(rec)?,
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(Error::data(format!(
                    "commit.paths must hold strings, found {}",
                    record::kind(other)
                ))),
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(Error::data(format!(
                "commit.paths must be an array of strings, found {}",
                record::kind(other)
            )));
        }
    };
    if named.is_empty() {
        if commit.is_none() {
            return Ok(None);
        }
        return Err(Error::data(
            "nothing to commit: the record has no commit.paths and no write.path",
        ));
    }
    let raw = match commit.and_then(|c| c.get("message")) {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => default_message.ok_or_else(|| {
            Error::data("no commit message: the record has no commit.message and no -m was given")
        })?,
        Some(other) => {
            return Err(Error::data(format!(
                "commit.message must be a string, found {}",
                record::kind(other)
            )));
        }
    };
    let message = Message::parse(raw).ok_or_else(|| Error::data("the commit message is empty"))?;
    let paths = named
        .iter()
        .map(|p| paths::relative(workdir, workdir, Path::new(p)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Job {
        paths,
        message,
        appends: appends_of(rec),
    }))
}

/// The appends elf-write reported for this record that name their entry's end; none without
/// a `key` (there is no marker then).
fn appends_of(rec: &Record) -> Vec<Append> {
    let Some(Value::String(key)) = rec.get("key").filter(|k| k.as_str() != Some("")) else {
        return Vec::new();
    };
    let one = |w: &Value, index: Option<usize>| -> Option<Append> {
        let w = w.as_object()?;
        let mode = refs::resolve(rec, w.get("mode")?).ok()?;
        if mode.as_str() != Some("append") {
            return None;
        }
        Some(Append {
            path: PathBuf::from(w.get("path")?.as_str()?),
            end: w.get("end")?.as_u64()?,
            bytes: w.get("bytes")?.as_u64()?,
            marker: marker(key, index),
        })
    };
    match rec.get("write") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, w)| one(w, Some(i)))
            .collect(),
        Some(w) => one(w, None).into_iter().collect(),
        None => Vec::new(),
    }
}

/// The paths elf-write reported for this record.
fn written_paths(rec: &Record) -> Result<Vec<&str>> {
    fn path_of(w: &Map<String, Value>) -> Result<Option<&str>> {
        match w.get("path") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::data(format!(
                "write.path must be a string, found {}",
                record::kind(other)
            ))),
        }
    }
    match rec.get("write") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(w)) => Ok(path_of(w)?.into_iter().collect()),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for (i, v) in a.iter().enumerate() {
                match v {
                    Value::Object(w) => out.extend(path_of(w)?),
                    Value::Null => {}
                    other => {
                        return Err(Error::data(format!(
                            "write[{i}] must be an object, found {}",
                            record::kind(other)
                        )));
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(Error::data(format!(
            "write must be an object or an array, found {}",
            record::kind(other)
        ))),
    }
}

//! The `write` key of a record: what to write, checked completely before anything is written.
//!
//! ```json
//! {"key":"k1","write":{"path":"memory/failures/20251201_t.md","mode":"create","unique":true,
//!                      "content":"# t\n"}}
//! {"key":"k2","write":[{"path":"a.md","content":"A\n"},
//!                      {"path":"log.md","mode":"append","header":"# Log\n\n","content":"- k2\n"}]}
//! ```
//!
//! Fields of a write object (others are kept and ignored):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `path` | string | relative to the root; required |
//! | `content` / `content_base64` | string | the bytes to write, as text or base64; exactly one |
//! | `mode` | string | `replace` (default), `create` or `append` |
//! | `unique` | bool | `create` only: take the next free name `name-2.ext`, `name-3.ext`, ... |
//! | `header` | string | `append` only: written first when the file is new or empty |
//! | `file_mode` | string | octal permissions for a new file (`"0644"`); an existing file keeps its own |
//!
//! Any field's value may be a reference (`{"$ref": "/db/id"}`, `{"$join": [...]}`, see
//! `elf_core::refs`), resolved against the record just before the write is parsed; the write
//! object itself, and each element of an array, must be an object as written.
//!
//! Results added to the same object (see `main.rs`): `path`, `bytes`, `created`, and for
//! appends `header_written` and `end`.

use std::ffi::OsStr;

use serde_json::{Map, Value};

use elf_core::record::kind;
use elf_core::{Error, Result};

use crate::target::RelPath;

/// How a write treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Replace the file's content (make it if missing).
    Replace,
    /// Make a new file; an existing one with the same content is this write, replayed.
    Create,
    /// Add to the end (make it, with the header, if missing).
    Append,
}

/// One write, checked.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Where, relative to the root.
    pub path: RelPath,
    /// The bytes to write.
    pub content: Vec<u8>,
    /// How.
    pub mode: Mode,
    /// `create`: choose the next free name when the name is taken by other content.
    pub unique: bool,
    /// `append`: written first into a new or empty file.
    pub header: Option<Vec<u8>>,
    /// Permissions for a new file (exactly these, umask not applied).
    pub file_mode: Option<u32>,
}

/// Parses the value of `write`: one object or an array of them.
pub fn parse(value: &Value) -> Result<Vec<Spec>> {
    match value {
        Value::Object(obj) => Ok(vec![parse_one(obj).map_err(|e| e.context("write"))?]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(obj) => {
                    parse_one(obj).map_err(|e| e.context(format_args!("write[{i}]")))
                }
                other => Err(Error::data(format!(
                    "write[{i}]: expected an object, found {}",
                    kind(other)
                ))),
            })
            .collect(),
        other => Err(Error::data(format!(
            "write: expected an object or an array of objects, found {}",
            kind(other)
        ))),
    }
}

fn string<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::data(format!(
            "\"{field}\" must be a string, found {}",
            kind(other)
        ))),
    }
}

fn parse_one(obj: &Map<String, Value>) -> Result<Spec> {
    let path = string(obj, "path")?.ok_or_else(|| Error::data("missing \"path\""))?;
    let path = RelPath::parse(OsStr::new(path))?;
    let content = match (string(obj, "content")?, string(obj, "content_base64")?) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(b64)) => {
            base64_decode(b64).map_err(|why| Error::data(format!("\"content_base64\": {why}")))?
        }
        (Some(_), Some(_)) => {
            return Err(Error::data(
                "give \"content\" or \"content_base64\", not both",
            ));
        }
        (None, None) => return Err(Error::data("missing \"content\" (or \"content_base64\")")),
    };
    let mode = match string(obj, "mode")? {
        None | Some("replace") => Mode::Replace,
        Some("create") => Mode::Create,
        Some("append") => Mode::Append,
        Some(other) => {
            return Err(Error::data(format!(
                "unknown mode \"{}\" (expected replace, create or append)",
                elf_core::text::escape(other)
            )));
        }
    };
    let unique = match obj.get("unique") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Error::data(format!(
                "\"unique\" must be true or false, found {}",
                kind(other)
            )));
        }
    };
    if unique && mode != Mode::Create {
        return Err(Error::data("\"unique\" needs mode \"create\""));
    }
    let header = string(obj, "header")?.map(|h| h.as_bytes().to_vec());
    if header.is_some() && mode != Mode::Append {
        return Err(Error::data("\"header\" needs mode \"append\""));
    }
    let file_mode = string(obj, "file_mode")?
        .map(|m| parse_file_mode(m).map_err(|why| Error::data(format!("\"file_mode\": {why}"))))
        .transpose()?;
    Ok(Spec {
        path,
        content,
        mode,
        unique,
        header,
        file_mode,
    })
}

/// Octal permissions: `"0644"`, `"644"` or `"0o644"`, at most `0777`.
pub fn parse_file_mode(s: &str) -> std::result::Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!(
            "expected octal permissions such as \"0644\", found \"{}\"",
            elf_core::text::escape(s)
        ));
    }
    let m = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
    if m > 0o777 {
        return Err(format!(
            "{s}: setuid, setgid and sticky bits are not allowed"
        ));
    }
    Ok(m)
}

/// The record's `key` as text, if it has one (needed for idempotent appends).
pub fn record_key(rec: &Map<String, Value>) -> Result<Option<&str>> {
    match rec.get("key") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(Value::String(_)) => Err(Error::data("\"key\" is empty")),
        Some(other) => Err(Error::data(format!(
            "\"key\" must be a string, found {}",
            kind(other)
        ))),
    }
}

/// Decodes standard base64 (RFC 4648 alphabet, `=` padding optional, no whitespace).
pub fn base64_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || (s.len() != body.len() && s.len() % 4 != 0) {
        return Err("bad padding".into());
    }
    if body.len() % 4 == 1 {
        return Err("truncated base64".into());
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v =
                val(c).ok_or_else(|| format!("invalid base64 character {:?}", char::from(c)))?;
            n |= v << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(v: Value) -> Option<u8> {
        parse(&v).err().map(|e| e.code())
    }

    #[test]
    fn one_or_many_and_every_bad_shape() {
        let ok = parse(&json!({"path":"a/b.md","content":"x"})).expect("one");
        assert_eq!(
            (ok.len(), ok[0].mode, ok[0].content.as_slice()),
            (1, Mode::Replace, &b"x"[..])
        );
        let many = parse(&json!([{"path":"a","content":"x"},{"path":"b","mode":"append","header":"h","content":"y"}]))
            .expect("many");
        assert_eq!(many[1].header.as_deref(), Some(&b"h"[..]));
        assert_eq!(code(json!("a")), Some(65));
        assert_eq!(code(json!([1])), Some(65));
        assert_eq!(code(json!({"content":"x"})), Some(65));
        assert_eq!(code(json!({"path":"a"})), Some(65));
        assert_eq!(
            code(json!({"path":"a","content":"x","content_base64":"eA=="})),
            Some(65)
        );
        assert_eq!(
            code(json!({"path":"a","content":"x","mode":"truncate"})),
            Some(65)
        );
        assert_eq!(
            code(json!({"path":"a","content":"x","unique":true})),
            Some(65)
        );
        assert_eq!(
            code(json!({"path":"a","content":"x","header":"h"})),
            Some(65)
        );
        assert_eq!(
            code(json!({"path":"a","content":"x","file_mode":644})),
            Some(65)
        );
        assert_eq!(code(json!({"path":"../a","content":"x"})), Some(65));
        assert_eq!(code(json!({"path":"/etc/a","content":"x"})), Some(65));
        let e = parse(&json!([{"path":"a","content":"x"},{"path":"b"}]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("write[1]: missing \"content\" (or \"content_base64\")")
        );
    }

    #[test]
    fn file_modes() {
        assert_eq!(parse_file_mode("0644"), Ok(0o644));
        assert_eq!(parse_file_mode("600"), Ok(0o600));
        assert_eq!(parse_file_mode("0o755"), Ok(0o755));
        for bad in ["", "8", "4755", "rw-r--r--", "0x1a4", "00644"] {
            assert!(parse_file_mode(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode("aGVsbG8="), Ok(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbG8"), Ok(b"hello".to_vec()));
        assert_eq!(base64_decode("AP8A"), Ok(vec![0, 255, 0]));
        assert_eq!(base64_decode(""), Ok(vec![]));
        assert!(base64_decode("a").is_err());
        assert!(base64_decode("aGVs bG8=").is_err());
        assert!(base64_decode("aGVsbG8===").is_err());
    }
}

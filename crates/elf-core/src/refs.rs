//! Late binding: an instruction value that takes its value from the record itself.
//!
//! A stage that needs an earlier stage's result (the new row id in a heading, the final path in
//! an UPDATE) says so in the record, and the stage that acts resolves it, from the record as it
//! reaches that stage, just before it acts. A replay of the same record resolves it the same way.
//!
//! # Forms
//!
//! - `{"$ref": "/db/id"}`: the value at a JSON Pointer (RFC 6901) in the record: `/`-separated
//!   keys and array indexes, `~1` for a `/` inside a key and `~0` for a `~`. The pointer `""`
//!   (the whole record) is refused: no instruction takes a whole record as its value.
//! - `{"$join": [part, ...]}`: text, the parts joined: a string as it is, a number as its exact
//!   text (`1.50` stays `1.50`), and a `$ref` or a `$join` as the string or number it resolves
//!   to. Anything else as a part (an object, an array, a boolean, null) is a bad record.
//!
//! # Rules
//!
//! - An object is a reference when its one key is `$ref` or `$join`. An object that has one
//!   of them beside other keys is a bad record, so that a misspelt reference is never taken
//!   for data.
//! - Strings are never references: user text (a title that reads `{"$ref": "/key"}`) is text.
//! - What a reference resolves to is data: references inside it are not resolved again, so a
//!   cycle cannot be written.
//! - A pointer that is not a pointer (not empty and not starting with `/`), or that leads to
//!   nothing, is a bad record (exit 65); the message names the pointer.
//!
//! Every tool resolves its own key's instructions through [`resolve`] and nothing else; the
//! instructions are passed on as they were given, with the tool's results added.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::exit::{Error, Result};
use crate::record::{Record, kind};

/// The key of a reference object.
pub const REF: &str = "$ref";
/// The key of a join object.
pub const JOIN: &str = "$join";

/// `v` with every reference in it resolved against `rec`; borrowed when it holds none.
pub fn resolve<'a>(rec: &Record, v: &'a Value) -> Result<Cow<'a, Value>> {
    if has_refs(v)? {
        resolved(rec, v).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(v))
    }
}

/// True when `v` holds a reference anywhere; an object that mixes a reference key with others
/// is an error.
pub fn has_refs(v: &Value) -> Result<bool> {
    match v {
        Value::Object(m) => {
            if is_ref(m)? {
                return Ok(true);
            }
            for x in m.values() {
                if has_refs(x)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Value::Array(a) => {
            for x in a {
                if has_refs(x)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// True when the object is a reference (`$ref` or `$join` its one key).
fn is_ref(m: &Map<String, Value>) -> Result<bool> {
    let marked = m.contains_key(REF) || m.contains_key(JOIN);
    if marked && m.len() != 1 {
        let which = if m.contains_key(REF) { REF } else { JOIN };
        return Err(Error::data(format!(
            "a \"{which}\" object must have no other key (found {})",
            m.keys()
                .map(|k| format!("\"{}\"", crate::text::escape(k)))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(marked)
}

fn resolved(rec: &Record, v: &Value) -> Result<Value> {
    match v {
        Value::Object(m) => {
            if let Some(target) = m.get(REF).filter(|_| m.len() == 1) {
                return pointer_value(rec, target).cloned();
            }
            if let Some(parts) = m.get(JOIN).filter(|_| m.len() == 1) {
                return join(rec, parts).map(Value::String);
            }
            let mut out = Map::with_capacity(m.len());
            for (k, x) in m {
                // `is_ref` was checked for every object by `has_refs`.
                out.insert(k.clone(), resolved(rec, x)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => a
            .iter()
            .map(|x| resolved(rec, x))
            .collect::<Result<Vec<_>>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// The value a `$ref` names.
fn pointer_value<'r>(rec: &'r Record, target: &Value) -> Result<&'r Value> {
    let Value::String(p) = target else {
        return Err(Error::data(format!(
            "\"$ref\" must be a JSON Pointer string such as \"/db/id\", found {}",
            kind(target)
        )));
    };
    lookup(rec, p)?.ok_or_else(|| {
        Error::data(format!(
            "reference \"{}\" resolves to nothing in the record",
            crate::text::escape(p)
        ))
    })
}

/// The value at JSON Pointer `p` (RFC 6901) in `rec`: `None` when it names nothing; an error
/// when `p` is not a pointer, or is `""` (the whole record, which no instruction takes).
pub fn lookup<'r>(rec: &'r Record, p: &str) -> Result<Option<&'r Value>> {
    if p.is_empty() {
        return Err(Error::data(
            "reference \"\" names the whole record; a reference must name a value in it, such as \"/db/id\"",
        ));
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(Error::data(format!(
            "reference \"{}\" is not a JSON Pointer: it must start with \"/\" (as in \"/db/id\")",
            crate::text::escape(p)
        )));
    };
    let mut tokens = rest.split('/');
    let first = unescape(tokens.next().unwrap_or_default(), p)?;
    let Some(mut at) = rec.get(first.as_ref()) else {
        return Ok(None);
    };
    for token in tokens {
        let token = unescape(token, p)?;
        at = match at {
            Value::Object(m) => match m.get(token.as_ref()) {
                Some(v) => v,
                None => return Ok(None),
            },
            Value::Array(a) => match index(&token) {
                Some(i) if i < a.len() => &a[i],
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
    }
    Ok(Some(at))
}

/// A reference token with `~1` and `~0` decoded; any other `~` is an error.
fn unescape<'t>(token: &'t str, p: &str) -> Result<Cow<'t, str>> {
    if !token.contains('~') {
        return Ok(Cow::Borrowed(token));
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => {
                return Err(Error::data(format!(
                    "reference \"{}\" is not a JSON Pointer: \"~\" must be followed by 0 or 1",
                    crate::text::escape(p)
                )));
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// An array index token: decimal digits without a leading zero (RFC 6901); `-` and anything
/// else name nothing.
fn index(token: &str) -> Option<usize> {
    let ok = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if ok { token.parse().ok() } else { None }
}

/// The text of a `$join`.
fn join(rec: &Record, parts: &Value) -> Result<String> {
    let Value::Array(parts) = parts else {
        return Err(Error::data(format!(
            "\"$join\" must be an array of parts, found {}",
            kind(parts)
        )));
    };
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        let value: Cow<'_, Value> = match part {
            Value::Object(m) if m.len() == 1 && m.contains_key(REF) => {
                Cow::Borrowed(pointer_value(rec, &m[REF])?)
            }
            Value::Object(m) if m.len() == 1 && m.contains_key(JOIN) => {
                Cow::Owned(Value::String(join(rec, &m[JOIN])?))
            }
            other => Cow::Borrowed(other),
        };
        match value.as_ref() {
            Value::String(s) => out.push_str(s),
            Value::Number(n) => out.push_str(&n.to_string()),
            other => {
                let what = if std::ptr::eq(other, part) {
                    format!("part {i} of \"$join\"")
                } else {
                    format!("part {i} of \"$join\" (a reference)")
                };
                return Err(Error::data(format!(
                    "{what} is {}; a part must be a string or a number",
                    kind(other)
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn res(r: &Record, v: Value) -> Result<Value> {
        resolve(r, &v).map(Cow::into_owned)
    }

    fn data_error(r: Result<Value>) -> String {
        match r {
            Err(e) if e.code() == crate::exit::DATAERR => e.to_string(),
            other => panic!("expected a bad record, got {other:?}"),
        }
    }

    #[test]
    fn references_take_values_from_the_record() {
        let r = crate::record::parse_line(
            br#"{"db":{"id":42,"ids":[7,8]},"write":{"path":"m/x-2.md"},"a/b":{"c~d":"slash and tilde"},"big":123456789012345678901234567890,"f":1.50}"#,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        assert_eq!(res(&r, json!({"$ref":"/db/id"})).ok(), Some(json!(42)));
        assert_eq!(res(&r, json!({"$ref":"/db/ids/1"})).ok(), Some(json!(8)));
        assert_eq!(
            res(&r, json!({"$ref":"/a~1b/c~0d"})).ok(),
            Some(json!("slash and tilde"))
        );
        assert_eq!(
            res(&r, json!({"$ref":"/db"})).ok(),
            Some(json!({"id":42,"ids":[7,8]}))
        );
        let params = json!({"sql":"UPDATE t SET p = :p WHERE id = :id",
                            "params":{"p":{"$ref":"/write/path"},"id":{"$ref":"/db/id"}}});
        assert_eq!(
            res(&r, params).ok(),
            Some(json!({"sql":"UPDATE t SET p = :p WHERE id = :id",
                        "params":{"p":"m/x-2.md","id":42}}))
        );
        // Numbers keep their exact text, joined or not.
        let joined = res(
            &r,
            json!({"$join":["## H-",{"$ref":"/db/id"},": ",{"$ref":"/f"}," ",{"$ref":"/big"}]}),
        );
        assert_eq!(
            joined.ok(),
            Some(json!("## H-42: 1.50 123456789012345678901234567890"))
        );
        assert_eq!(
            res(&r, json!({"$ref":"/big"})).ok().map(|v| v.to_string()),
            Some("123456789012345678901234567890".to_string())
        );
        // Joins nest; an empty join is the empty string.
        assert_eq!(
            res(&r, json!([{"$join":["a",{"$join":["b",1]}]},{"$join":[]}])).ok(),
            Some(json!(["ab1", ""]))
        );
    }

    #[test]
    fn values_without_references_are_borrowed_and_strings_are_never_references() {
        let r = rec(json!({"db":{"id":1}}));
        let v = json!({"title":"{\"$ref\":\"/db/id\"}","n":[1,{"x":"$ref"}],"$refs":1});
        assert!(matches!(resolve(&r, &v), Ok(Cow::Borrowed(_))));
        assert_eq!(res(&r, v.clone()).ok(), Some(v));
    }

    #[test]
    fn resolved_values_are_data_so_cycles_cannot_happen() {
        let r = rec(json!({"write":{"content":{"$ref":"/write/content"},
                                    "other":{"$ref":"/write/content"}}}));
        // The value found is the object {"$ref": ...} itself, not resolved again.
        assert_eq!(
            res(&r, json!({"$ref":"/write/content"})).ok(),
            Some(json!({"$ref":"/write/content"}))
        );
        let e = data_error(res(&r, json!({"$join":[{"$ref":"/write/content"}]})));
        assert!(e.contains("part 0"), "{e}");
    }

    #[test]
    fn bad_references_are_bad_records_naming_the_pointer() {
        let r = rec(json!({"db":{"id":1,"ids":[5]},"s":"text","n":null}));
        for (v, want) in [
            (json!({"$ref":"/db/idd"}), "\"/db/idd\" resolves to nothing"),
            (
                json!({"$ref":"/nothing"}),
                "\"/nothing\" resolves to nothing",
            ),
            (
                json!({"$ref":"/db/ids/1"}),
                "\"/db/ids/1\" resolves to nothing",
            ),
            (
                json!({"$ref":"/db/ids/01"}),
                "\"/db/ids/01\" resolves to nothing",
            ),
            (
                json!({"$ref":"/db/ids/-"}),
                "\"/db/ids/-\" resolves to nothing",
            ),
            (json!({"$ref":"/s/x"}), "\"/s/x\" resolves to nothing"),
            (json!({"$ref":"db/id"}), "must start with \"/\""),
            (json!({"$ref":""}), "whole record"),
            (json!({"$ref":"/db/~2"}), "\"~\" must be followed by 0 or 1"),
            (json!({"$ref":42}), "JSON Pointer string"),
            (json!({"$ref":"/db/id","x":1}), "no other key"),
            (json!({"$join":"a"}), "array of parts"),
            (json!({"$join":[true]}), "part 0 of \"$join\" is a boolean"),
            (
                json!({"$join":["a",{"$ref":"/db"}]}),
                "part 1 of \"$join\" (a reference) is an object",
            ),
            (
                json!({"$join":["a",{"$ref":"/n"}]}),
                "part 1 of \"$join\" (a reference) is null",
            ),
            (json!({"$join":[[1]]}), "part 0 of \"$join\" is an array"),
            (json!({"deep":[{"$join":["x"],"y":2}]}), "no other key"),
        ] {
            let e = data_error(res(&r, v.clone()));
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}

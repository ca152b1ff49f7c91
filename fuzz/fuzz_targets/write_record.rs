//! elf-write's record parser: the `write` key (`spec.rs`) and the path rules (`target.rs`),
//! on arbitrary bytes read as a record line and as a path, a file mode and base64 text.
//!
//! Properties: no input panics; a parsed write has a confined, normalised path (no `..`,
//! `.`, empty or `/` component, a file name last) and consistent options; a refusal is 65 or
//! 77 with a message free of control characters; a path's normal form parses to itself; an
//! append marker is one line that decodes back to its key and index; base64 round-trips.
#![no_main]

use elf_write::spec;
use elf_write::target;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use spec::Mode;
use target::RelPath;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(rec)) = elf_core::record::parse_line(data) {
        if let Some(v) = rec.get("write") {
            check_write(v);
        }
        match spec::record_key(&rec) {
            Ok(Some(k)) => {
                check_marker(k, None);
                check_marker(k, Some(data.len() % 7));
            }
            Ok(None) => {}
            Err(e) => assert_eq!(e.code(), 65),
        }
    }
    check_path(OsStr::from_bytes(data));
    if let Ok(text) = std::str::from_utf8(data) {
        check_mode(text);
        check_base64(text);
    }
    // Any bytes encode and decode back.
    assert_eq!(spec::base64_decode(&encode(data)).as_deref(), Ok(data));
});

fn check_write(v: &Value) {
    match spec::parse(v) {
        Ok(specs) => {
            let expected = match v {
                Value::Array(a) => a.len(),
                _ => 1,
            };
            assert_eq!(specs.len(), expected);
            for s in &specs {
                check_rel(&s.path);
                assert!(!s.unique || s.mode == Mode::Create, "unique without create");
                assert!(
                    s.header.is_none() || s.mode == Mode::Append,
                    "header without append"
                );
                assert!(
                    s.file_mode.is_none_or(|m| m <= 0o777),
                    "file mode {:?}",
                    s.file_mode
                );
            }
        }
        Err(e) => {
            assert!(matches!(e.code(), 65 | 77), "code {} for {v}", e.code());
            let msg = e.to_string();
            assert!(
                !msg.chars().any(char::is_control),
                "raw control character in {msg:?}"
            );
        }
    }
}

fn check_path(p: &OsStr) {
    match RelPath::parse(p) {
        Ok(rel) => {
            check_rel(&rel);
            assert!(!p.as_bytes().starts_with(b"/"));
            // The normal form is a fixed point.
            let again = RelPath::parse(OsStr::new(&rel.display()));
            if rel.display().as_bytes() == rel_bytes(&rel) {
                assert_eq!(again.ok().as_ref(), Some(&rel));
            }
        }
        Err(e) => {
            let code = e.code();
            assert!(matches!(code, 65 | 77), "code {code}");
            let msg = e.to_string();
            assert!(
                !msg.chars().any(char::is_control),
                "raw control character in {msg:?}"
            );
            // 77 exactly for an absolute path or one that climbs above the root (an empty
            // path or one with a NUL is 65 first).
            let b = p.as_bytes();
            let refused = !b.is_empty() && !b.contains(&0) && (b[0] == b'/' || climbs(b));
            assert_eq!(code == 77, refused, "code {code}");
        }
    }
}

/// Whether a path that is not absolute climbs above its root (a `..` with nothing to undo).
fn climbs(p: &[u8]) -> bool {
    if p.contains(&0) || p.is_empty() {
        return false;
    }
    let mut depth = 0usize;
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

fn rel_bytes(rel: &RelPath) -> Vec<u8> {
    let mut out = rel.folder_bytes();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(rel.name.as_bytes());
    out
}

fn check_rel(rel: &RelPath) {
    let ok = |c: &OsStr| {
        let b = c.as_bytes();
        !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
    };
    assert!(ok(&rel.name), "bad file name {:?}", rel.name);
    assert!(
        rel.parents.iter().all(|p| ok(p)),
        "bad folder in {:?}",
        rel.parents
    );
}

fn check_mode(text: &str) {
    if let Ok(m) = spec::parse_file_mode(text) {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        assert!(m <= 0o777);
        assert!(!digits.is_empty() && digits.len() <= 4);
        assert!(digits.bytes().all(|b| (b'0'..=b'7').contains(&b)));
    }
}

fn check_base64(text: &str) {
    if let Ok(bytes) = spec::base64_decode(text) {
        assert_eq!(spec::base64_decode(&encode(&bytes)), Ok(bytes));
    }
}

/// The marker is one line, cannot close its comment early, and decodes back to its key and
/// index: two different (key, index) never share a marker.
fn check_marker(key: &str, index: Option<usize>) {
    let m = elf_core::marker::marker(key, index);
    assert_eq!(m.iter().filter(|&&b| b == b'\n').count(), 1);
    let inner = m
        .strip_prefix(b"<!-- elf:")
        .and_then(|r| r.strip_suffix(b" -->\n"))
        .expect("marker shape");
    assert!(!inner.windows(3).any(|w| w == b"-->"));
    let (k, i) = match inner.iter().position(|&b| b == b' ') {
        Some(sp) => (&inner[..sp], Some(&inner[sp + 1..])),
        None => (inner, None),
    };
    assert_eq!(percent_decode(k), key.as_bytes());
    assert_eq!(
        i.map(|i| i.to_vec()),
        index.map(|i| i.to_string().into_bytes())
    );
    assert!(elf_core::marker::has_marker(&m, &m));
    let mut doc = b"# Log\n\nquote: ".to_vec();
    doc.extend_from_slice(&m);
    assert!(
        !elf_core::marker::has_marker(&doc, &m),
        "a marker inside a line counted"
    );
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    while out.len() % 4 != 0 {
        out.push('=');
    }
    out
}

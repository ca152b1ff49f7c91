//! The marker line of an idempotent append: one definition for the tool that writes it
//! (elf-write) and the tool that finds a record's entry by it (elf-commit).
//!
//! An append of a record with a `key` adds an *entry* at the end of the file: the header when
//! the file was new or empty, then the marker line ([`marker`]), then the content (and, before
//! all of it, a newline when the file did not end with one). So:
//!
//! - the marker is always a whole line: it starts the file or follows a `\n`, and ends with
//!   `\n`;
//! - the record's content follows its marker line directly;
//! - a marker names one record's one append: two different (key, index) pairs never give the
//!   same line, so a file holds each marker at most once when only elf-write appends to it.
//!
//! The end of an entry (the size of the file's prefix that ends with it, elf-write's `end`)
//! is therefore checked with nothing but the prefix itself, the marker and the content's size
//! ([`ends_with_entry`]); [`entry_end`] finds it again in a file written earlier.

/// The marker line an append carries: `<!-- elf:KEY -->` and a newline, or
/// `<!-- elf:KEY N -->` for the write at index N of a `write` array (so two appends of one
/// record to one file are two entries). Bytes of the key outside `A-Z a-z 0-9 . _ : @ / + = -`
/// are percent-encoded, so the line is one line, the comment cannot be closed early, and a key
/// cannot pose as another key's indexed marker.
pub fn marker(key: &str, index: Option<usize>) -> Vec<u8> {
    let mut out = b"<!-- elf:".to_vec();
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || b"._:@/+=-".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    if let Some(i) = index {
        out.extend_from_slice(format!(" {i}").as_bytes());
    }
    out.extend_from_slice(b" -->\n");
    out
}

/// True when `data` holds `marker` (from [`marker`]) as a whole line (`\n` or `\r\n` ended,
/// or the last line without an end).
pub fn has_marker(data: &[u8], marker: &[u8]) -> bool {
    after_marker(data, marker).is_some()
}

/// The offset just past the first line of `data` that is `marker` (see [`has_marker`]).
pub fn after_marker(data: &[u8], marker: &[u8]) -> Option<usize> {
    let m = marker.strip_suffix(b"\n").unwrap_or(marker);
    let mut start = 0;
    loop {
        let (line, next) = match data[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (&data[start..start + i], start + i + 1),
            None => (&data[start..], data.len()),
        };
        if line.strip_suffix(b"\r").unwrap_or(line) == m {
            return Some(next);
        }
        if next >= data.len() {
            return None;
        }
        start = next;
    }
}

/// The end of the entry that `marker` starts in `data`: the offset just past `content`, when
/// the first line that is `marker` is followed by exactly `content`; `None` otherwise.
pub fn entry_end(data: &[u8], marker: &[u8], content: &[u8]) -> Option<u64> {
    let start = after_marker(data, marker)?;
    data[start..]
        .starts_with(content)
        .then(|| (start + content.len()) as u64)
}

/// True when `prefix` ends with an entry of `bytes` bytes of content after `marker` (exactly
/// the line [`marker`] gives): the marker sits at `prefix.len() - bytes - marker.len()`, and
/// it starts the data or follows a `\n`.
pub fn ends_with_entry(prefix: &[u8], marker: &[u8], bytes: u64) -> bool {
    let Ok(bytes) = usize::try_from(bytes) else {
        return false;
    };
    let Some(at) = prefix
        .len()
        .checked_sub(bytes)
        .and_then(|n| n.checked_sub(marker.len()))
    else {
        return false;
    };
    prefix[at..].starts_with(marker) && (at == 0 || prefix[at - 1] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_one_safe_line_and_found_only_as_lines() {
        assert_eq!(marker("01JABC", None), b"<!-- elf:01JABC -->\n".to_vec());
        assert_eq!(
            marker("01JABC", Some(2)),
            b"<!-- elf:01JABC 2 -->\n".to_vec()
        );
        assert_ne!(marker("k 2", None), marker("k", Some(2)));
        assert_eq!(
            marker("a-->b\nc d", None),
            b"<!-- elf:a--%3Eb%0Ac%20d -->\n".to_vec()
        );
        let m = marker("k1", None);
        assert!(has_marker(b"# H\n\n<!-- elf:k1 -->\n## H-1\n", &m));
        assert!(has_marker(b"x\r\n<!-- elf:k1 -->\r\n", &m));
        assert!(has_marker(b"x\n<!-- elf:k1 -->", &m));
        assert!(!has_marker(b"quote: <!-- elf:k1 -->\n", &m));
        assert!(!has_marker(b"<!-- elf:k10 -->\n", &m));
        assert!(!has_marker(b"", &m));
    }

    #[test]
    fn entries_are_found_and_checked_by_their_end() {
        let m = marker("k1", None);
        let file = b"# H\n\n<!-- elf:k0 -->\nzero\n<!-- elf:k1 -->\none\n<!-- elf:k2 -->\ntwo\n";
        let end = entry_end(file, &m, b"one\n");
        assert_eq!(end, Some(46));
        assert!(ends_with_entry(&file[..46], &m, 4));
        // Other content after the marker: no end.
        assert_eq!(entry_end(file, &m, b"uno\n"), None);
        assert_eq!(entry_end(file, &marker("k3", None), b""), None);
        // The end must fall exactly after the content, behind the exact marker line.
        assert!(!ends_with_entry(&file[..45], &m, 4));
        assert!(!ends_with_entry(&file[..46], &m, 3));
        assert!(!ends_with_entry(&file[..46], &marker("k2", None), 4));
        assert!(!ends_with_entry(&file[..4], &m, 4));
        assert!(!ends_with_entry(b"x<!-- elf:k1 -->\none\n", &m, 4));
        assert!(ends_with_entry(b"<!-- elf:k1 -->\none\n", &m, 4));
        assert!(!ends_with_entry(b"<!-- elf:k1 -->\none\n", &m, u64::MAX));
    }
}

//! The record stream: JSON objects, one per line.
//!
//! # Wire format
//!
//! Every tool reads and writes the same format. These rules are the one source of the
//! protocol's text: the README's copy is checked against them by a test, and every man page's
//! RECORD FORMAT section is made from them.
//!
#![doc = include_str!("protocol.md")]
//!
//! A record after three stages:
//!
//! ```json
//! {"key":"k1","db":{"table":"learnings","values":{"title":"t"},"id":42},
//!  "write":{"path":"memory/failures/x.md","content":"# t\n","bytes":4,"created":true},
//!  "commit":{"message":"failure: t","sha":"9f2c..."}}
//! ```
//!
//! A stage that fails on a record under `--keep-going` passes it on with
//! `"error":{"tool":"elf-write","code":65,"message":"...","line":3}` added.

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use serde_json::{Map, Value};

use crate::exit::{Error, IoContext, Result};
use crate::signals;

/// One record: a JSON object whose key order is kept.
pub type Record = Map<String, Value>;

/// The protocol's rules, in Markdown (see the module documentation).
pub const PROTOCOL: &str = include_str!("protocol.md");

/// The default line limit: 16 MiB.
pub const DEFAULT_MAX_LINE: usize = 16 << 20;

/// Reads records, one per line, counting lines from 1.
pub struct Reader<R> {
    inner: R,
    limit: usize,
    line: u64,
    buf: Vec<u8>,
}

impl Reader<io::BufReader<File>> {
    /// Records from standard input (read through its own 64 KiB buffer, so that [`ready`]
    /// can see what is buffered).
    ///
    /// [`ready`]: Reader::ready
    pub fn stdin(limit: usize) -> Result<Self> {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ctx("reading standard input")?;
        Ok(Reader::new(
            io::BufReader::with_capacity(64 << 10, File::from(fd)),
            limit,
        ))
    }

    /// True when another line has already arrived: buffered here or readable without
    /// blocking. Group commit batches only what is ready, so a live pipeline never waits.
    pub fn ready(&self) -> bool {
        !self.inner.buffer().is_empty() || poll_readable(self.inner.get_ref().as_raw_fd())
    }
}

impl<R: BufRead> Reader<R> {
    /// Records from any buffered reader.
    pub fn new(inner: R, limit: usize) -> Self {
        Reader {
            inner,
            limit,
            line: 0,
            buf: Vec::new(),
        }
    }

    /// The number of the last line read (0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The next record and its line number, `None` at the end of input.
    ///
    /// A bad line gives an error (exit 65) naming it; the reader stays usable and the next call
    /// continues with the following line, so `--keep-going` can skip it.
    pub fn next_record(&mut self) -> Option<Result<(u64, Record)>> {
        Some(
            self.next_line()?
                .and_then(|line| self.record().map(|rec| (line, rec))),
        )
    }

    /// The next line that is not blank, without parsing it: its number, `None` at the end of
    /// input. Its text is then [`Reader::text`] and its record [`Reader::record`], for a tool
    /// that passes some records on as the very text they came in as. A line over the limit is
    /// a bad record (exit 65) naming it; the next call goes on with the following line.
    pub fn next_line(&mut self) -> Option<Result<u64>> {
        loop {
            match self.read_line() {
                Err(e) => return Some(Err(e)),
                Ok(None) => return None,
                Ok(Some(true)) => {
                    return Some(Err(Error::data(format!(
                        "line is longer than the limit of {} bytes",
                        self.limit
                    ))
                    .at_line(self.line)));
                }
                Ok(Some(false)) if self.buf.iter().all(is_blank_byte) => continue,
                Ok(Some(false)) => return Some(Ok(self.line)),
            }
        }
    }

    /// The record on the line [`Reader::next_line`] returned last (a bad one is an error naming
    /// the line).
    pub fn record(&self) -> Result<Record> {
        match parse_line(&self.buf) {
            Ok(Some(rec)) => Ok(rec),
            Ok(None) => Err(Error::data("blank line").at_line(self.line)),
            Err(e) => Err(e.at_line(self.line)),
        }
    }

    /// The text of the line [`Reader::next_line`] returned last, without the spaces, tabs and
    /// carriage returns around it (what [`parse_line`] parses): for a good record, the JSON
    /// object as it came in.
    pub fn text(&self) -> &[u8] {
        let start = self.buf.iter().position(|b| !is_blank_byte(b));
        let end = self.buf.iter().rposition(|b| !is_blank_byte(b));
        match (start, end) {
            (Some(start), Some(end)) => &self.buf[start..=end],
            _ => &[],
        }
    }

    /// Reads one line into `buf`. `Ok(Some(true))` when the line was over the limit (its bytes
    /// are discarded), `Ok(None)` at end of input.
    fn read_line(&mut self) -> Result<Option<bool>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if let Some(sig) = signals::received() {
                        return Err(Error::signal(sig));
                    }
                    continue;
                }
                Err(e) => return Err(Error::io("reading input", &e)),
            };
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                self.line += 1;
                return Ok(Some(too_long));
            }
            any = true;
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1),
                None => (available, available.len()),
            };
            let found_newline = done > chunk.len();
            if !too_long {
                if self.buf.len() + chunk.len() > self.limit {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            self.inner.consume(done);
            if found_newline {
                self.line += 1;
                return Ok(Some(too_long));
            }
        }
    }
}

/// True when `fd` has data (or end of file) ready to read now.
pub fn poll_readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && (pfd.revents & (libc::POLLIN | libc::POLLHUP)) != 0
}

/// The bytes trimmed around a line (a line of only these is blank).
fn is_blank_byte(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

/// Parses one line: `Ok(None)` for a blank line.
pub fn parse_line(bytes: &[u8]) -> Result<Option<Record>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::data(format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1)))?;
    let text = text.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
    if text.is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(other) => Err(Error::data(format!(
            "expected a JSON object, found {}",
            kind(&other)
        ))),
        Err(e) => Err(Error::data(format!("invalid JSON: {e}"))),
    }
}

/// The JSON type of a value, for messages ("a string", "an array", ...).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes records, one per line, flushing after each.
pub struct Writer<W: Write> {
    inner: W,
    scratch: Vec<u8>,
}

impl Writer<io::StdoutLock<'static>> {
    /// Records to standard output.
    pub fn stdout() -> Self {
        Writer::new(io::stdout().lock())
    }
}

impl<W: Write> Writer<W> {
    /// Records to any writer.
    pub fn new(inner: W) -> Self {
        Writer {
            inner,
            scratch: Vec::with_capacity(4096),
        }
    }

    /// Writes one record and a newline, then flushes. A closed pipe gives the broken-pipe
    /// error (exit 141).
    pub fn write(&mut self, rec: &Record) -> Result<()> {
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, rec)
            .map_err(|e| Error::internal(format!("serializing a record: {e}")))?;
        self.scratch.push(b'\n');
        self.inner.write_all(&self.scratch).ctx("writing output")?;
        self.inner.flush().ctx("writing output")
    }

    /// The writer inside.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

/// True when a stage must pass this record on untouched.
pub fn has_error(rec: &Record) -> bool {
    rec.get("error").is_some_and(|v| !v.is_null())
}

/// Adds `error` to a record (the `--keep-going` form of a failure).
pub fn set_error(rec: &mut Record, tool: &str, err: &Error) {
    let mut e = Map::new();
    e.insert("tool".into(), Value::from(tool));
    e.insert("code".into(), Value::from(err.code()));
    e.insert("message".into(), Value::from(err.message()));
    if let Some(line) = err.line() {
        e.insert("line".into(), Value::from(line));
    }
    rec.insert("error".into(), Value::Object(e));
}

/// A record that stands for a line that could not be parsed at all (under `--keep-going`).
pub fn error_record(tool: &str, err: &Error) -> Record {
    let mut rec = Map::new();
    set_error(&mut rec, tool, err);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], limit: usize) -> Vec<Result<(u64, Record)>> {
        let mut r = Reader::new(input, limit);
        std::iter::from_fn(|| r.next_record()).collect()
    }

    #[test]
    fn numbers_lines_and_skips_blanks() {
        let out = read_all(b"{\"a\":1}\n\n  \r\n{\"b\":2}", 100);
        let got: Vec<u64> = out
            .iter()
            .map(|r| r.as_ref().map(|(n, _)| *n).unwrap_or(0))
            .collect();
        assert_eq!(got, vec![1, 4]);
    }

    #[test]
    fn bad_lines_name_their_line_and_reading_continues() {
        let out = read_all(
            b"{\"a\":1}\n[1]\n{\"a\":\xff}\n{\"long\":\"xxxxxxxxxxxxxxxxxxxx\"}\n{}\n",
            20,
        );
        let errs: Vec<String> = out
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0], "line 2: expected a JSON object, found an array");
        assert!(errs[1].starts_with("line 3: invalid UTF-8"), "{}", errs[1]);
        assert_eq!(errs[2], "line 4: line is longer than the limit of 20 bytes");
        assert!(
            out.iter()
                .all(|r| r.as_ref().map_or_else(|e| e.code() == 65, |_| true))
        );
        assert!(matches!(out.last(), Some(Ok((5, _)))));
    }

    #[test]
    fn lines_come_as_their_trimmed_text_and_parse_only_when_asked() {
        let mut r = Reader::new(
            &b" \t{\"a\": 1}\r\n\n  \n[1]\n{\"long\":\"xxxxxxxxxxxx\"}\n{}"[..],
            16,
        );
        assert_eq!(r.next_line().map(|l| l.ok()), Some(Some(1)));
        assert_eq!(r.text(), b"{\"a\": 1}");
        assert_eq!(
            r.record().ok().and_then(|m| m.get("a").cloned()),
            Some(Value::from(1))
        );
        // The blank lines 2 and 3 are skipped; a line that is not an object is an error only
        // once parsed.
        assert_eq!(r.next_line().map(|l| l.ok()), Some(Some(4)));
        assert_eq!(r.text(), b"[1]");
        assert_eq!(
            r.record().map_err(|e| e.code()).err(),
            Some(crate::exit::DATAERR)
        );
        // Over the limit: an error naming the line, then the reading goes on.
        let e = r.next_line().and_then(|l| l.err());
        assert!(e.is_some_and(|e| e.to_string().contains("line 5")));
        assert_eq!(r.next_line().map(|l| l.ok()), Some(Some(6)));
        assert_eq!(r.text(), b"{}");
        assert!(r.next_line().is_none());
    }

    #[test]
    fn truncated_json_is_a_data_error() {
        let out = read_all(b"{\"a\":", 100);
        let e = out[0].as_ref().err().map(|e| (e.code(), e.line()));
        assert_eq!(e, Some((65, Some(1))));
    }

    #[test]
    fn untouched_keys_keep_value_and_order() {
        let line = br#"{"z":1,"key":"k","db":{"table":"t"},"big":123456789012345678901234567890,"f":1.50,"u":"\u00e9"}"#;
        let mut rec = parse_line(line).ok().flatten().unwrap_or_default();
        if let Some(Value::Object(db)) = rec.get_mut("db") {
            db.insert("id".into(), Value::from(42));
        }
        let mut w = Writer::new(Vec::new());
        assert!(w.write(&rec).is_ok());
        let text = String::from_utf8(w.get_mut().clone()).unwrap_or_default();
        assert_eq!(
            text,
            "{\"z\":1,\"key\":\"k\",\"db\":{\"table\":\"t\",\"id\":42},\"big\":123456789012345678901234567890,\"f\":1.50,\"u\":\"é\"}\n"
        );
    }

    #[test]
    fn error_records_carry_tool_code_message_line() {
        let e = Error::data("bad path").at_line(3);
        let rec = error_record("elf-write", &e);
        assert_eq!(
            Value::Object(rec),
            serde_json::json!({"error":{"tool":"elf-write","code":65,"message":"bad path","line":3}})
        );
    }
}

//! Standard input as lines, each parsed as a record when asked, its text kept.
//!
//! The lines are split as `elf_core::record::Reader` splits them (a final line without `\n`
//! accepted, blank lines skipped, a line over the limit a bad record that the reading goes on
//! after), and parsed by `elf_core::record::parse_line`, the one parser of the wire format. The
//! text of the line is kept, so that a record passed on unchanged, or with one key added at its
//! end, is written out as the very text it came in as instead of being serialized again; and
//! `insert --table` can read a plain row without building a record at all (see
//! [`crate::lean`]). That is the fast path of bulk loads and of `done`.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use elf_core::record::{self, Record, poll_readable};
use elf_core::{Error, IoContext, Result, signals};

/// Lines from standard input.
pub struct Input {
    inner: BufReader<File>,
    limit: usize,
    line: u64,
    buf: Vec<u8>,
    fd: RawFd,
}

/// The bytes that `parse_line` trims around a line (and that make a line blank).
fn is_blank_byte(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

impl Input {
    /// Standard input, with lines of at most `limit` bytes.
    pub fn stdin(limit: usize) -> Result<Input> {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ctx("reading standard input")?;
        let file = File::from(fd);
        let raw_fd = file.as_raw_fd();
        Ok(Input {
            inner: BufReader::with_capacity(64 << 10, file),
            limit,
            line: 0,
            buf: Vec::with_capacity(4096),
            fd: raw_fd,
        })
    }

    /// The next line that is not blank: its number, `None` at the end of input. Its text is
    /// then [`Input::text`] and its record [`Input::record`]. A line over the limit is a bad
    /// record (exit 65) naming it; the next call goes on with the following line.
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

    /// The record on the line [`Input::next_line`] returned last (a bad one is an error naming
    /// the line).
    pub fn record(&self) -> Result<Record> {
        match record::parse_line(&self.buf) {
            Ok(Some(rec)) => Ok(rec),
            Ok(None) => Err(Error::data("blank line").at_line(self.line)),
            Err(e) => Err(e.at_line(self.line)),
        }
    }

    /// The text of the line [`Input::next_line`] returned last, without the spaces, tabs and
    /// carriage returns around it (what `parse_line` parses): for a good record, the JSON
    /// object as it came in.
    pub fn text(&self) -> &[u8] {
        let start = self.buf.iter().position(|b| !is_blank_byte(b));
        let end = self.buf.iter().rposition(|b| !is_blank_byte(b));
        match (start, end) {
            (Some(start), Some(end)) => &self.buf[start..=end],
            _ => &[],
        }
    }

    /// True when another line has already arrived: buffered here or readable without
    /// blocking (or the input has ended). Group commit batches only what is ready.
    pub fn ready(&self) -> bool {
        !self.inner.buffer().is_empty() || poll_readable(self.fd)
    }

    /// Reads one line into `buf`. `Ok(Some(true))` when the line was over the limit (its bytes
    /// are discarded), `Ok(None)` at end of input. (The same splitting as `Reader`'s.)
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
            let (chunk, done) = match crate::lean::find_byte(available, b'\n') {
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

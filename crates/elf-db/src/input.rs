//! Standard input as lines, each parsed as a record only when asked, its text kept.
//!
//! `elf_core::record::Reader` splits the lines (a final line without `\n` accepted, blank
//! lines skipped, a line over the limit a bad record that the reading goes on after) and parses
//! them with `parse_line`, the one parser of the wire format. The text of the line is kept, so
//! that a record passed on unchanged, or with one key added at its end, is written out as the
//! very text it came in as instead of being serialized again; and `insert --table` can read a
//! plain row without building a record at all (see [`crate::lean`]). That is the fast path of
//! bulk loads and of `done`.
//!
//! [`Lines`] also keeps the lines of the current batch, so that the batch can be run again
//! from its first line when a record's failure took the whole transaction with it (a trigger's
//! `RAISE(ROLLBACK)`, an `ON CONFLICT ROLLBACK` constraint): see [`crate::batch`].

use elf_core::record::{self, Record};
use elf_core::{Error, Result, exit};

/// Lines from standard input.
pub type Input = elf_core::record::Reader<std::io::BufReader<std::fs::File>>;

/// A line of the current batch, kept for a replay.
struct Kept {
    line: u64,
    start: usize,
    end: usize,
    /// The line could not be read as a line (longer than the limit).
    bad: Option<Error>,
    /// The record failed, and its failure rolled back the transaction: on a replay it is not
    /// run again but fails with this error.
    failed: Option<Error>,
}

/// The input lines, with the current batch's lines kept so that the batch can be replayed.
pub struct Lines {
    reader: Input,
    text: Vec<u8>,
    kept: Vec<Kept>,
    /// The index of the current line in `kept`.
    current: usize,
    /// While replaying: the index of the next line to give again.
    replay: Option<usize>,
    /// Set when the last line of a replay has been given.
    finished: bool,
}

impl Lines {
    /// Standard input, lines up to `limit` bytes.
    pub fn stdin(limit: usize) -> Result<Lines> {
        Ok(Lines {
            reader: Input::stdin(limit)?,
            text: Vec::new(),
            kept: Vec::new(),
            current: 0,
            replay: None,
            finished: false,
        })
    }

    /// At the start of a batch: the lines of the batches before are forgotten, except those a
    /// replay has still to give.
    pub fn start_batch(&mut self) {
        match self.replay {
            None => {
                self.kept.clear();
                self.text.clear();
            }
            Some(0) => {}
            Some(i) => {
                let shift = self.kept[i].start;
                self.kept.drain(..i);
                self.text.drain(..shift);
                for k in &mut self.kept {
                    k.start -= shift;
                    k.end -= shift;
                }
                self.replay = Some(0);
            }
        }
        self.finished = false;
    }

    /// The next line that is not blank (see `Reader::next_line`): a replayed one first.
    pub fn next_line(&mut self) -> Option<Result<u64>> {
        if let Some(i) = self.replay {
            self.current = i;
            if i + 1 < self.kept.len() {
                self.replay = Some(i + 1);
            } else {
                self.replay = None;
                self.finished = true;
            }
            let k = &self.kept[i];
            return Some(match &k.bad {
                Some(e) => Err(e.clone()),
                None => Ok(k.line),
            });
        }
        let got = self.reader.next_line()?;
        let start = self.text.len();
        let (line, bad) = match &got {
            Ok(line) => {
                self.text.extend_from_slice(self.reader.text());
                (*line, None)
            }
            Err(e) if e.code() == exit::DATAERR => (self.reader.line(), Some(e.clone())),
            // Reading failed: the run stops, nothing is replayed.
            Err(_) => return Some(got),
        };
        self.current = self.kept.len();
        self.kept.push(Kept {
            line,
            start,
            end: self.text.len(),
            bad,
            failed: None,
        });
        Some(got)
    }

    /// The text of the current line, trimmed (see `Reader::text`).
    pub fn text(&self) -> &[u8] {
        self.kept
            .get(self.current)
            .and_then(|k| self.text.get(k.start..k.end))
            .unwrap_or_default()
    }

    /// The record on the current line (a bad one is an error naming the line).
    pub fn record(&self) -> Result<Record> {
        let line = self.kept.get(self.current).map_or(0, |k| k.line);
        match record::parse_line(self.text()) {
            Ok(Some(rec)) => Ok(rec),
            Ok(None) => Err(Error::data("blank line").at_line(line)),
            Err(e) => Err(e.at_line(line)),
        }
    }

    /// True when another line is ready without waiting: one to replay, or one that has
    /// arrived (see `Reader::ready`).
    pub fn ready(&self) -> bool {
        self.replay.is_some() || self.reader.ready()
    }

    /// The error of the current line when it is a record whose failure rolled back a
    /// transaction before: it is not run again.
    pub fn known_failure(&self) -> Option<Error> {
        self.kept.get(self.current).and_then(|k| k.failed.clone())
    }

    /// The current record failed and took the transaction with it: it keeps `error`, and the
    /// batch is given again from its first line. False (nothing done) when the current line
    /// had failed so already, which cannot happen since it is not run again.
    pub fn rewind(&mut self, error: Error) -> bool {
        match self.kept.get_mut(self.current) {
            Some(k) if k.failed.is_none() => {
                k.failed = Some(error);
                self.replay = Some(0);
                self.finished = false;
                true
            }
            _ => false,
        }
    }

    /// True once, after the last line of a replay was given: the batch should end there, so
    /// that the replayed records are committed before anything else can roll them back again.
    pub fn take_finished(&mut self) -> bool {
        std::mem::take(&mut self.finished)
    }
}

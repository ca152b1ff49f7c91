//! Standard input as records, with the text of each record kept.
//!
//! Records are read by `elf_core::record::Reader` (the one implementation of the wire format);
//! the bytes it consumes are also copied aside, so that a record passed on unchanged, or with
//! one key added at its end, is written out as the very text it came in as instead of being
//! serialized again. That is the fast path of bulk loads and of `done`.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::rc::Rc;

use elf_core::record::{Reader, Record, poll_readable};
use elf_core::{IoContext, Result};

/// Standard input, buffered, with every consumed byte copied to `raw` (up to a cap).
struct Tee {
    inner: BufReader<File>,
    raw: Rc<RefCell<Vec<u8>>>,
    buffered: Rc<Cell<usize>>,
    cap: usize,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Tee {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let b = self.inner.fill_buf()?;
        self.buffered.set(b.len());
        Ok(b)
    }

    fn consume(&mut self, n: usize) {
        {
            let mut raw = self.raw.borrow_mut();
            if raw.len() < self.cap {
                let b = self.inner.buffer();
                raw.extend_from_slice(&b[..n.min(b.len())]);
            }
        }
        self.inner.consume(n);
        self.buffered.set(self.inner.buffer().len());
    }
}

/// Records from standard input.
pub struct Input {
    reader: Reader<Tee>,
    cap: usize,
    raw: Rc<RefCell<Vec<u8>>>,
    buffered: Rc<Cell<usize>>,
    fd: RawFd,
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
        let raw = Rc::new(RefCell::new(Vec::with_capacity(4096)));
        let buffered = Rc::new(Cell::new(0));
        let tee = Tee {
            inner: BufReader::with_capacity(64 << 10, file),
            raw: Rc::clone(&raw),
            buffered: Rc::clone(&buffered),
            cap: limit.saturating_add(2),
        };
        let cap = tee.cap;
        Ok(Input {
            reader: Reader::new(tee, limit),
            cap,
            raw,
            buffered,
            fd: raw_fd,
        })
    }

    /// The next record and its line number, `None` at the end of input (see
    /// `Reader::next_record`).
    pub fn next(&mut self) -> Option<Result<(u64, Record)>> {
        self.raw.borrow_mut().clear();
        self.reader.next_record()
    }

    /// The JSON text of the record `next` returned last: the object, without the blank lines
    /// before it and the white space around it. `None` when it was not kept (more blank lines
    /// before it than the line limit).
    pub fn text(&self) -> Option<std::cell::Ref<'_, [u8]>> {
        let raw = self.raw.borrow();
        let t = raw.trim_ascii();
        let whole = raw.len() < self.cap && t.first() == Some(&b'{') && t.last() == Some(&b'}');
        whole.then(|| std::cell::Ref::map(raw, |r| r.trim_ascii()))
    }

    /// True when another line has already arrived: buffered here or readable without
    /// blocking (or the input has ended). Group commit batches only what is ready.
    pub fn ready(&self) -> bool {
        self.buffered.get() > 0 || poll_readable(self.fd)
    }
}

//! Standard output, buffered and flushed by the caller at the moments that matter (the end of
//! a batch, the end of a query): every command that prints goes through it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;

use elf_core::{IoContext, Result};

/// Standard output through a buffer that is flushed once per batch (all of a batch's records
/// become durable at the same instant, so nothing is gained by writing them one by one).
pub struct Out {
    inner: BufWriter<File>,
}

impl Out {
    /// Standard output.
    pub fn stdout() -> Result<Out> {
        let fd = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .ctx("opening standard output")?;
        Ok(Out {
            inner: BufWriter::with_capacity(64 << 10, File::from(fd)),
        })
    }

    /// Writes one line and a newline (buffered).
    pub fn raw(&mut self, line: &[u8]) -> Result<()> {
        self.inner.write_all(line).ctx("writing output")?;
        self.inner.write_all(b"\n").ctx("writing output")
    }

    /// Writes bytes as they are (buffered).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write_all(bytes).ctx("writing output")
    }

    /// Flushes.
    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush().ctx("writing output")
    }
}

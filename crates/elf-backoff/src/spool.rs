//! Standard input captured once and replayed to every attempt, and output held until an
//! attempt's status is known: in memory up to 1 MiB, in an unnamed temporary file beyond that.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Beyond this many bytes, a spool moves to a temporary file.
const MEMORY_LIMIT: usize = 1 << 20;

/// Bytes held in memory or, when large, in an unnamed temporary file.
#[derive(Debug)]
pub enum Spool {
    Mem(Vec<u8>),
    File(File),
}

impl Spool {
    pub fn new() -> Spool {
        Spool::Mem(Vec::new())
    }

    /// Reads `r` to its end.
    pub fn fill_from(&mut self, r: &mut impl Read) -> io::Result<()> {
        // Into memory first, growing with the data (an empty or small input touches no more
        // pages than it needs: start-up cost matters for a command wrapper).
        if let Spool::Mem(v) = self {
            let room = (MEMORY_LIMIT + 1).saturating_sub(v.len()) as u64;
            r.by_ref().take(room).read_to_end(v)?;
            if v.len() <= MEMORY_LIMIT {
                return Ok(());
            }
            // Over the limit: move what was read to a temporary file, then go on there.
            self.push(&[])?;
        }
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.push(&buf[..n])?;
        }
    }

    /// Adds `data` at the end.
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Spool::Mem(v) if v.len() + data.len() <= MEMORY_LIMIT => {
                v.extend_from_slice(data);
                Ok(())
            }
            Spool::Mem(v) => {
                let mut f = temp_file()?;
                f.write_all(v)?;
                f.write_all(data)?;
                *self = Spool::File(f);
                Ok(())
            }
            Spool::File(f) => f.write_all(data),
        }
    }

    /// Writes everything held to `w`.
    pub fn copy_to(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            Spool::Mem(v) => w.write_all(v)?,
            Spool::File(f) => {
                let mut f = f.try_clone()?;
                f.seek(SeekFrom::Start(0))?;
                io::copy(&mut f, w)?;
            }
        }
        w.flush()
    }
}

/// An unnamed file in the temporary folder: it vanishes when closed, even after a crash.
pub fn temp_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(&dir)
    {
        Ok(f) => Ok(f),
        Err(_) => {
            // File systems without O_TMPFILE: a named file, removed at once.
            let name = dir.join(format!(
                ".elf-backoff.{}.{}.tmp",
                std::process::id(),
                rand::random::<u64>()
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&name)?;
            std::fs::remove_file(&name)?;
            Ok(f)
        }
    }
}

/// Standard input as every attempt will see it.
#[derive(Debug)]
pub enum Input {
    /// A terminal (or no stdin at all): passed through, not captured.
    Inherit,
    /// A regular file: every attempt starts reading at the same offset.
    Seekable(i64),
    /// Captured bytes.
    Captured(Arc<Spool>),
}

impl Input {
    /// Captures standard input (reading it to its end unless it is a terminal or a file).
    pub fn capture() -> io::Result<Input> {
        // SAFETY: isatty and fstat only inspect file descriptor 0; `st` is a valid out pointer.
        let (tty, st) = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            (
                libc::isatty(0) == 1,
                (libc::fstat(0, &mut st) == 0).then_some(st),
            )
        };
        let Some(st) = st else {
            return Ok(Input::Inherit);
        };
        if tty {
            return Ok(Input::Inherit);
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            // SAFETY: lseek on fd 0, which fstat just showed to be a regular file.
            let off = unsafe { libc::lseek(0, 0, libc::SEEK_CUR) };
            if off >= 0 {
                return Ok(Input::Seekable(off));
            }
        }
        let mut spool = Spool::new();
        // Straight from descriptor 0: std's buffered stdin would only add a copy.
        // SAFETY: descriptor 0 is open (fstat succeeded) and ManuallyDrop never closes it.
        let mut fd0 = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
        spool.fill_from(&mut *fd0)?;
        Ok(Input::Captured(Arc::new(spool)))
    }

    /// Sets up `cmd`'s standard input for one attempt; a feeder when bytes must be written
    /// into a pipe once the child runs.
    pub fn attach(&self, cmd: &mut Command) -> io::Result<Option<Feeder>> {
        match self {
            Input::Inherit => Ok(None),
            Input::Seekable(off) => {
                // SAFETY: lseek on fd 0, a regular file; the child inherits it at this offset.
                if unsafe { libc::lseek(0, *off, libc::SEEK_SET) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                cmd.stdin(Stdio::inherit());
                Ok(None)
            }
            Input::Captured(spool) => match &**spool {
                Spool::Mem(v) if v.is_empty() => {
                    cmd.stdin(Stdio::null());
                    Ok(None)
                }
                Spool::Mem(_) => {
                    cmd.stdin(Stdio::piped());
                    Ok(Some(Feeder(Arc::clone(spool))))
                }
                Spool::File(f) => {
                    // A fresh open file description, so each attempt reads from the start
                    // without sharing an offset with an earlier one.
                    let path = format!("/proc/self/fd/{}", f.as_raw_fd());
                    let fresh = match File::open(&path) {
                        Ok(fresh) => fresh,
                        Err(_) => {
                            let mut dup = f.try_clone()?;
                            dup.seek(SeekFrom::Start(0))?;
                            dup
                        }
                    };
                    cmd.stdin(Stdio::from(OwnedFd::from(fresh)));
                    Ok(None)
                }
            },
        }
    }
}

/// Writes captured bytes into a child's stdin pipe on a thread.
pub struct Feeder(Arc<Spool>);

impl Feeder {
    /// Starts writing into the child's stdin; the pipe is closed when done. A child that exits
    /// without reading everything is not an error.
    pub fn start(self, child: &mut Child) -> JoinHandle<()> {
        let pipe = child.stdin.take();
        std::thread::spawn(move || {
            if let Some(mut pipe) = pipe {
                let _ = self.0.copy_to(&mut pipe);
            }
        })
    }
}

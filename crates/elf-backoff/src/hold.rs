//! An attempt's standard output, read from a pipe while the command runs: held up to a limit
//! (`--hold`), then passed on as it comes; and the reader of our own output, watched so that a
//! reader that has gone stops the run.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};

use elf_core::{Error, IoContext, Result};

use crate::spool::Spool;

/// What became of an attempt's output.
#[derive(Debug)]
pub enum Output {
    /// All of it, held: written out only if this attempt ends the run.
    Held(Spool),
    /// It grew past the limit and was passed on as it came: this attempt ends the run.
    PassedOn,
    /// Our reader went away while output was passed on: the command was sent SIGPIPE.
    ReaderGone,
}

/// A pipe for the command's standard output: (our read end, the command's write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Non-blocking reads: after the command exits, only what it wrote is read, never a wait
    // for a background process that still holds the pipe open.
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        if fl < 0 || libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((r, w))
}

/// Where the bytes go.
struct Sink {
    limit: u64,
    held: u64,
    spool: Option<Spool>,
    gone: bool,
    error: Option<Error>,
}

impl Sink {
    /// Takes a chunk; false when the pipe should be closed (reader gone, or an error).
    fn take(&mut self, data: &[u8], child: u32) -> bool {
        let r = match &mut self.spool {
            Some(s) if self.held + data.len() as u64 <= self.limit => {
                self.held += data.len() as u64;
                match s.push(data) {
                    Ok(()) => return true,
                    Err(e) => {
                        self.error = Some(Error::io("holding the output", &e));
                        return false;
                    }
                }
            }
            Some(s) => {
                // Past the limit: what is held goes out first, then everything as it comes.
                let mut out = io::stdout().lock();
                let r = s.copy_to(&mut out).and_then(|()| pass(&mut out, data));
                self.spool = None;
                r
            }
            None => pass(&mut io::stdout().lock(), data),
        };
        match r {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.gone = true;
                // Stop the command as the closed pipe would have, had it written there itself.
                // SAFETY: kill(2) to our own child, not yet reaped.
                unsafe { libc::kill(child as libc::pid_t, libc::SIGPIPE) };
                false
            }
            Err(e) => {
                self.error = Some(Error::io("writing output", &e));
                false
            }
        }
    }
}

fn pass(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    out.write_all(data)?;
    out.flush()
}

/// Reads the command's output from `pipe` until the command exits, holding at most `limit`
/// bytes, and reaps it. An error of our own (the temporary file, our standard output) is
/// returned after the command has ended; the command meanwhile sees its pipe closed.
pub fn collect(child: &mut Child, pipe: OwnedFd, limit: u64) -> Result<(ExitStatus, Output)> {
    let mut sink = Sink {
        limit,
        held: 0,
        spool: Some(Spool::new()),
        gone: false,
        error: None,
    };
    let pidfd = pidfd_open(child.id());
    let mut pipe = Some(File::from(pipe));
    let mut buf = vec![0u8; 64 << 10];
    let status = loop {
        let Some(p) = pipe.as_mut() else {
            break wait(child)?;
        };
        let mut fds = [
            libc::pollfd {
                fd: p.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Without a pidfd (Linux before 5.3), look at the command every 10 ms.
        let timeout = if pidfd.is_some() { -1 } else { 10 };
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("waiting for output", &e));
        }
        let mut keep = true;
        if fds[0].revents != 0 {
            match p.read(&mut buf) {
                // Every writer has closed it: the command and whatever it started.
                Ok(0) => keep = false,
                Ok(n) => keep = sink.take(&buf[..n], child.id()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(Error::io("reading the output", &e)),
            }
        }
        let exited = match &pidfd {
            Some(_) => fds[1].revents != 0,
            None => child.try_wait().ctx("waiting for the command")?.is_some(),
        };
        if exited && keep {
            // Everything the command wrote before it exited is in the pipe now: read that
            // much, and not what a background process it left behind may go on writing.
            let mut left = pending(p);
            while left > 0 && keep {
                let want = left.min(buf.len());
                match p.read(&mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => {
                        left -= n;
                        keep = sink.take(&buf[..n], child.id());
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(Error::io("reading the output", &e)),
                }
            }
            break wait(child)?;
        }
        if !keep {
            pipe = None;
        }
    };
    if let Some(e) = sink.error {
        return Err(e);
    }
    let out = match (sink.gone, sink.spool) {
        (true, _) => Output::ReaderGone,
        (false, Some(s)) => Output::Held(s),
        (false, None) => Output::PassedOn,
    };
    Ok((status, out))
}

/// Reaps the command.
pub fn wait(child: &mut Child) -> Result<ExitStatus> {
    loop {
        match child.wait() {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("waiting for the command", &e)),
        }
    }
}

/// Bytes waiting in a pipe.
fn pending(p: &File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores an int through the valid pointer `n`.
    if unsafe { libc::ioctl(p.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    usize::try_from(n).unwrap_or(0)
}

/// A descriptor that becomes readable when the process exits (Linux 5.3 on).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// True when our standard output is a pipe or socket whose reader has gone: another attempt's
/// output would have nowhere to go.
pub fn reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: 1,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: fstat and poll on descriptor 1 with valid pointers; a zero timeout never blocks.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(1, &mut st) != 0 {
            return false;
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFIFO && kind != libc::S_IFSOCK {
            return false;
        }
        libc::poll(&mut fd, 1, 0) == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }
}

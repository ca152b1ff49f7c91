//! Running the command while the locks are held.
//!
//! The command is a child that dies with elf-lock: it gets `PR_SET_PDEATHSIG(SIGKILL)` before
//! exec, and checks that its parent is still elf-lock after setting it (elf-lock may have
//! been killed between the fork and the prctl, which would leave the setting without effect).
//! So a `kill -9` of elf-lock can never leave the command running without the lock.

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use elf_core::signals;
use elf_core::{Error, Result, exit, text};

/// Runs `argv`, passing it the descriptors `inherit` (the locks, unless `-o`), and returns its
/// exit status as a shell reports it.
pub fn run(argv: &[OsString], inherit: &[RawFd]) -> Result<u8> {
    let mut cmd = command(argv, inherit)?;
    let parent = std::process::id();
    let parent = libc::pid_t::try_from(parent).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid, kill, getpid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // elf-lock died before the prctl took effect: do not run unprotected.
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    if let Some(sig) = signals::received() {
        return Err(Error::signal(sig));
    }
    let mut child = cmd.spawn().map_err(|e| cannot_run(&argv[0], &e))?;
    signals::set_child(Some(child.id()));
    let status = child.wait();
    signals::set_child(None);
    let status = status.map_err(|e| Error::io("waiting for the command", &e))?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(exit::SOFTWARE),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(exit::SOFTWARE),
        _ => exit::SOFTWARE,
    })
}

/// Replaces elf-lock with the command (`-F`): the command keeps elf-lock's pid, so the lock
/// and the holder record stay valid for as long as it runs.
pub fn exec(argv: &[OsString], inherit: &[RawFd]) -> Result<u8> {
    let mut cmd = command(argv, inherit)?;
    if let Some(sig) = signals::received() {
        return Err(Error::signal(sig));
    }
    let e = cmd.exec();
    Err(cannot_run(&argv[0], &e))
}

fn command(argv: &[OsString], inherit: &[RawFd]) -> Result<Command> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(Error::usage("no command given"));
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if !inherit.is_empty() {
        let fds: Vec<RawFd> = inherit.to_vec();
        // SAFETY: runs in the child before exec; fcntl(2) is async-signal-safe and the
        // descriptors are ours.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    Ok(cmd)
}

fn cannot_run(prog: &OsString, e: &io::Error) -> Error {
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    let t = e.to_string();
    let t = t.rfind(" (os error ").map_or(t.as_str(), |i| &t[..i]);
    Error::new(
        code,
        format!("cannot run {}: {t}", text::escape(&prog.to_string_lossy())),
    )
}

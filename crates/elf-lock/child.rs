//! Running the command while the locks are held.
//!
//! The command is a child that dies with elf-lock: it gets `PR_SET_PDEATHSIG(SIGKILL)` before
//! exec, and checks that its parent is still elf-lock after setting it (elf-lock may have
//! been killed between the fork and the prctl, which would leave the setting without effect).
//! So a `kill -9` of elf-lock can never leave the command running without the lock.
//!
//! The child is made with fork(2) and execvp(3), as flock(1) makes it, rather than with
//! `std::process::Command`, which holds the parent until the child has exec'd (to report an
//! exec failure through a pipe): one more wake-up of elf-lock on every run, which shows under
//! load. Here the child reports its own exec failure on standard error and exits 127 (not
//! found) or 126 (cannot run), and the parent goes straight to waiting.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use elf_core::signals;
use elf_core::{Error, Result, exit, text};

/// Runs `argv`, passing it the descriptors `inherit` (the locks, unless `-o`), and returns its
/// exit status as a shell reports it.
pub fn run(argv: &[OsString], inherit: &[RawFd]) -> Result<u8> {
    let Some(prog) = argv.first() else {
        return Err(Error::usage("no command given"));
    };
    // Everything the child needs is made before the fork: it only makes system calls.
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::usage("the command contains a NUL byte"))?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let prefix = format!(
        "{}: cannot run {}: ",
        elf_core::tool_name(),
        text::escape(&prog.to_string_lossy())
    );
    // SAFETY: getpid(2) cannot fail.
    let parent = unsafe { libc::getpid() };
    if let Some(sig) = signals::received() {
        return Err(Error::signal(sig));
    }
    // The forwarded signals are blocked across the fork: one that arrives meanwhile reaches
    // the parent after it (and is forwarded by set_child) or the child once it has its
    // default disposition back (and ends it), never a handler in a child that cannot forward.
    // SAFETY: sigset operations on local sets, and sigprocmask(2) with valid pointers.
    let old = unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        for sig in signals::HANDLED {
            libc::sigaddset(&mut block, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &block, &mut old);
        old
    };
    // SAFETY: fork(2) in a single-threaded process; the child runs `exec_child`, which makes
    // only async-signal-safe system calls on memory prepared above and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child, with every pointer valid (copied by fork).
        unsafe { exec_child(parent, inherit, &ptrs, prefix.as_bytes()) }
    }
    let forked = io::Error::last_os_error();
    // SAFETY: restoring the mask saved above.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(Error::io("starting the command", &forked));
    }
    signals::set_child(u32::try_from(pid).ok());
    let status = wait(pid);
    signals::set_child(None);
    let status = status.map_err(|e| Error::io("waiting for the command", &e))?;
    Ok(if libc::WIFEXITED(status) {
        u8::try_from(libc::WEXITSTATUS(status) & 0xff).unwrap_or(exit::SOFTWARE)
    } else if libc::WIFSIGNALED(status) {
        u8::try_from(128 + libc::WTERMSIG(status)).unwrap_or(exit::SOFTWARE)
    } else {
        exit::SOFTWARE
    })
}

/// The forked child: dies with its parent, takes the locks along unless `-o`, and becomes
/// the command.
///
/// # Safety
/// Only in the child of a fork(2); `argv` is a NULL-terminated array of valid C strings.
unsafe fn exec_child(
    parent: libc::pid_t,
    inherit: &[RawFd],
    argv: &[*const libc::c_char],
    prefix: &[u8],
) -> ! {
    // SAFETY: async-signal-safe system calls on valid arguments; see each comment.
    unsafe {
        // The parent-death signal, and the race it leaves open: if elf-lock died before the
        // prctl, our parent is already someone else, and the command must not run.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != parent {
            libc::_exit(128 + libc::SIGKILL);
        }
        // The command starts as std starts children: every signal at its default disposition
        // (SIGPIPE too, which elf-lock ignores and an exec would leave ignored) and none
        // blocked.
        for sig in signals::HANDLED {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        for &fd in inherit {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        libc::execvp(argv[0], argv.as_ptr());
        let errno = *libc::__errno_location();
        let why = libc::strerror(errno);
        libc::write(2, prefix.as_ptr().cast(), prefix.len());
        libc::write(2, why.cast(), libc::strlen(why));
        libc::write(2, c"\n".as_ptr().cast(), 1);
        libc::_exit(if errno == libc::ENOENT { 127 } else { 126 });
    }
}

/// waitpid(2), resumed after a signal (which the handler has forwarded).
fn wait(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid(2) on our own child with a valid status pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Replaces elf-lock with the command (`-F`): the command keeps elf-lock's pid, so the lock
/// and the holder record stay valid for as long as it runs.
pub fn exec(argv: &[OsString], inherit: &[RawFd]) -> Result<u8> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(Error::usage("no command given"));
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if !inherit.is_empty() {
        let fds: Vec<RawFd> = inherit.to_vec();
        // SAFETY: runs before exec; fcntl(2) is async-signal-safe and the descriptors are ours.
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
    if let Some(sig) = signals::received() {
        return Err(Error::signal(sig));
    }
    let e = cmd.exec();
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    let t = e.to_string();
    let t = t.rfind(" (os error ").map_or(t.as_str(), |i| &t[..i]);
    Err(Error::new(
        code,
        format!("cannot run {}: {t}", text::escape(&prog.to_string_lossy())),
    ))
}

//! Running the command while the locks are held.
//!
//! The command is a child that dies with elf-lock: it gets `PR_SET_PDEATHSIG(SIGKILL)` before
//! exec, and checks that its parent is still elf-lock after setting it (elf-lock may have
//! been killed between the fork and the prctl, which would leave the setting without effect).
//!
//! What the command starts is taken along too. The command leads a process group of its own,
//! so SIGINT, SIGTERM and SIGHUP are forwarded to every process in it, and when elf-lock is
//! stopped by one of them, whatever is left of the group once the command has exited gets
//! SIGKILL. A `kill -9` of elf-lock itself leaves elf-lock no chance to act, so the lock is
//! tied to the group instead:
//!
//! - by default the command inherits the lock descriptors, so every process of the group
//!   holds the lock for as long as it runs (the kernel releases a `flock` only when its last
//!   descriptor closes);
//! - with `-o` the command does not hold them, so a keeper does: a fork of elf-lock made
//!   before the command may exec (the command waits at a gate until the keeper exists). It
//!   holds every lock descriptor and waits on a pipe from elf-lock. When elf-lock ends
//!   normally it says so on the pipe and the keeper exits; when the pipe closes without that
//!   word, elf-lock is dead, and the keeper sends SIGKILL to the group, waits until no live
//!   process is left in it, and only then exits, releasing the locks.
//!
//! In the foreground of a terminal the command stays in elf-lock's process group instead, as
//! GNU timeout's `--foreground` leaves it: a new group there could not read the terminal
//! (SIGTTIN) and would miss Ctrl-C and Ctrl-Z, which the terminal sends to the foreground
//! group: to the command and everything it started. There only the command itself dies with
//! elf-lock; what it started keeps the lock while it runs unless `-o` was given.
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
use std::time::Duration;

use elf_core::signals;
use elf_core::{Error, Result, exit, text};

/// Runs `argv`, passing it the descriptors `inherit` (the locks, unless `-o`), and returns its
/// exit status as a shell reports it. With `keeper` (`-o`), a keeper holds the locks until
/// the command's process group is gone should elf-lock be killed.
pub fn run(argv: &[OsString], inherit: &[RawFd], keeper: bool) -> Result<u8> {
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
    let group = !terminal_foreground();
    let gate = if group && keeper {
        Some(Pipe::new().map_err(|e| Error::io("starting the command", &e))?)
    } else {
        None
    };
    if let Some(sig) = signals::received() {
        return Err(Error::signal(sig));
    }
    // The forwarded signals are blocked across the forks: one that arrives meanwhile reaches
    // the parent after it (and is forwarded by set_group) or the child once it has its
    // default disposition back (and ends it), never a handler in a child that cannot forward.
    let blocked = signals::Blocked::handled();
    let start = Start {
        parent,
        group,
        gate: gate.as_ref().map(|g| (g.read, g.write)),
    };
    // SAFETY: fork(2) in a single-threaded process; the child runs `exec_child`, which makes
    // only async-signal-safe system calls on memory prepared above and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child, with every pointer valid (copied by fork).
        unsafe { exec_child(&start, inherit, &ptrs, prefix.as_bytes()) }
    }
    let forked = io::Error::last_os_error();
    if pid < 0 {
        drop(blocked);
        return Err(Error::io("starting the command", &forked));
    }
    if group {
        // Also in the child: whichever runs first, the group exists before either goes on.
        // SAFETY: setpgid(2) on our own child; it fails harmlessly once the child has exec'd.
        unsafe { libc::setpgid(pid, pid) };
    }
    let keeper = match gate {
        None => None,
        Some(gate) => match Keeper::start(pid, blocked.previous(), [gate.read, gate.write]) {
            Ok(k) => {
                gate.open();
                Some(k)
            }
            Err(e) => {
                // The command has not exec'd: it is at the gate, which closes with `gate`.
                drop(gate);
                // SAFETY: kill(2) and waitpid(2) on our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = reap(pid);
                drop(blocked);
                return Err(Error::io("starting the lock keeper", &e));
            }
        },
    };
    drop(blocked);
    if group {
        signals::set_group(u32::try_from(pid).ok());
    } else {
        signals::set_child(u32::try_from(pid).ok());
    }
    // The command is left a zombie until the group has been dealt with, so that its pid, the
    // group's id, cannot be taken by another process meanwhile.
    let exited = exited(pid);
    signals::set_child(None);
    let stopped = exited.is_err() || signals::received().is_some();
    if group && stopped {
        // Stopped by a signal (already forwarded to the group) or a failure: nothing of the
        // command may run on.
        // SAFETY: kill(2) on the group our child leads; the child is not reaped yet.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let status = reap(pid);
    if let Some(k) = keeper {
        k.finish(!stopped);
    }
    exited.map_err(|e| Error::io("waiting for the command", &e))?;
    let status = status.map_err(|e| Error::io("waiting for the command", &e))?;
    Ok(if libc::WIFEXITED(status) {
        u8::try_from(libc::WEXITSTATUS(status) & 0xff).unwrap_or(exit::SOFTWARE)
    } else if libc::WIFSIGNALED(status) {
        u8::try_from(128 + libc::WTERMSIG(status)).unwrap_or(exit::SOFTWARE)
    } else {
        exit::SOFTWARE
    })
}

/// Whether elf-lock is in the foreground process group of its controlling terminal.
fn terminal_foreground() -> bool {
    // SAFETY: open(2) of a constant path; O_NOCTTY never makes it our controlling terminal.
    let fd = unsafe {
        libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        // No controlling terminal (ENXIO): a script, a service, an agent.
        return false;
    }
    // SAFETY: tcgetpgrp(3) and close(2) on the descriptor just opened; getpgrp(2) cannot fail.
    unsafe {
        let fg = libc::tcgetpgrp(fd);
        libc::close(fd);
        fg > 0 && fg == libc::getpgrp()
    }
}

/// How the forked child starts.
struct Start {
    parent: libc::pid_t,
    /// Lead a process group of its own.
    group: bool,
    /// Wait for a byte on this pipe (read end, write end) before exec.
    gate: Option<(RawFd, RawFd)>,
}

/// A pipe, both ends close-on-exec, closed on drop.
struct Pipe {
    read: RawFd,
    write: RawFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2(2) with a valid two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe {
            read: fds[0],
            write: fds[1],
        })
    }

    /// Lets the child waiting at this gate go on.
    fn open(self) {
        // SAFETY: write(2) of one byte from a valid buffer to our pipe.
        unsafe { libc::write(self.write, [1u8].as_ptr().cast(), 1) };
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: both descriptors were opened by `new` and are closed only here.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

/// The `-o` keeper: a fork of elf-lock holding the locks (see the module documentation).
struct Keeper {
    pid: libc::pid_t,
    /// The write end of the pipe the keeper waits on.
    line: RawFd,
}

/// The word that lets the keeper go without touching the group.
const RELEASE: u8 = b'r';

impl Keeper {
    /// Forks the keeper of the group `pgid`; called with the forwarded signals blocked.
    /// `gate` is the command's gate, which the keeper must not keep open.
    fn start(pgid: libc::pid_t, mask: &libc::sigset_t, gate: [RawFd; 2]) -> io::Result<Keeper> {
        let pipe = Pipe::new()?;
        // SAFETY: fork(2) in a single-threaded process; the child never returns from `keep`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child; the descriptors and the mask are valid copies.
            unsafe { keep(pgid, pipe.read, [gate[0], gate[1], pipe.write], mask) }
        }
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        // Also in the keeper: whichever runs first, the keeper has left elf-lock's process
        // group before the command may exec, so a kill of that whole group (`kill -9 -PGID`)
        // can never take the keeper along while the command runs.
        // SAFETY: setpgid(2) on our own child, which never execs.
        unsafe { libc::setpgid(pid, pid) };
        // SAFETY: the read end is the keeper's; ours is closed once, here.
        unsafe { libc::close(pipe.read) };
        let line = pipe.write;
        std::mem::forget(pipe);
        Ok(Keeper { pid, line })
    }

    /// Lets the keeper go (`release`: the command ended normally, leave what it left) or has
    /// it clear the group, and waits for it, so the locks are free when elf-lock exits.
    fn finish(self, release: bool) {
        // SAFETY: write(2) and close(2) on the pipe end we own.
        unsafe {
            if release {
                libc::write(self.line, [RELEASE].as_ptr().cast(), 1);
            }
            libc::close(self.line);
        }
        let _ = reap(self.pid);
    }
}

/// The keeper's life: wait for elf-lock's word or its death, then clear the group if needed.
///
/// # Safety
/// Only in the child of a fork(2) of the single-threaded elf-lock.
unsafe fn keep(pgid: libc::pid_t, line: RawFd, close: [RawFd; 3], mask: &libc::sigset_t) -> ! {
    // SAFETY: system calls on valid arguments; the process is single-threaded, so allocating
    // is safe after the fork.
    unsafe {
        // The write ends stay with elf-lock alone: its death must close them.
        for fd in close {
            libc::close(fd);
        }
        // Neither the signals meant for elf-lock's job nor a kill of its whole process group
        // (`kill -9 -PGID`, `timeout -s KILL`) stop the keeper: it ends with the command's group.
        libc::setpgid(0, 0);
        for sig in signals::HANDLED {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
        // Keep no pipe of the caller open: `$(elf-lock ...)` must not wait for the keeper.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        let mut word = 0u8;
        let n = loop {
            let n = libc::read(line, (&raw mut word).cast(), 1);
            if n >= 0 || *libc::__errno_location() != libc::EINTR {
                break n;
            }
        };
        if n != 1 || word != RELEASE {
            clear_group(pgid);
        }
        libc::_exit(0);
    }
}

/// Sends SIGKILL to the group until none of its processes is alive (zombies excepted, which
/// run nothing).
fn clear_group(pgid: libc::pid_t) {
    let mut delay = Duration::from_millis(1);
    loop {
        // SAFETY: kill(2) on the command's group.
        let r = unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return;
        }
        if !group_lives(pgid) {
            return;
        }
        crate::acquire::nap(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Whether a process of group `pgid` is alive (not a zombie), as `/proc` lists them; true
/// when `/proc` cannot be read, so the locks are never released on a guess.
fn group_lives(pgid: libc::pid_t) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(stat) = std::fs::read(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": fields resume after the last ')'.
        let Some(close) = stat.iter().rposition(|&b| b == b')') else {
            continue;
        };
        let rest = String::from_utf8_lossy(&stat[close + 1..]);
        let mut f = rest.split_ascii_whitespace();
        let (Some(state), Some(_ppid), Some(pgrp)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if pgrp.parse::<libc::pid_t>().ok() == Some(pgid) && !matches!(state, "Z" | "X") {
            return true;
        }
    }
    false
}

/// The forked child: dies with its parent, leads its own group, takes the locks along unless
/// `-o`, and becomes the command.
///
/// # Safety
/// Only in the child of a fork(2); `argv` is a NULL-terminated array of valid C strings.
unsafe fn exec_child(
    start: &Start,
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
        if libc::getppid() != start.parent {
            libc::_exit(128 + libc::SIGKILL);
        }
        if start.group {
            libc::setpgid(0, 0);
        }
        if let Some((read, write)) = start.gate {
            // Wait until the keeper exists; end of file means elf-lock is gone.
            libc::close(write);
            let mut b = 0u8;
            loop {
                let n = libc::read(read, (&raw mut b).cast(), 1);
                if n == 1 {
                    break;
                }
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(128 + libc::SIGKILL);
            }
            libc::close(read);
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

/// waitid(2) for the child's exit, leaving it a zombie; resumed after a signal (which the
/// handler has forwarded).
fn exited(pid: libc::pid_t) -> io::Result<()> {
    let id = libc::id_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ECHILD))?;
    loop {
        // SAFETY: waitid(2) on our own child with a valid siginfo pointer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// waitpid(2), resumed after a signal (which the handler has forwarded).
fn reap(pid: libc::pid_t) -> io::Result<libc::c_int> {
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

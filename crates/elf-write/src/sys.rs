//! Thin, safe wrappers over the directory-relative system calls elf-write needs.
//!
//! Every call takes a folder's file descriptor and one name in it, so that once a folder is
//! resolved (see `target.rs`) nothing is looked up by path again.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// A name as a C string; a name with a NUL byte is an invalid-input error.
pub fn cname(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Repeats a call interrupted by a signal (we install handlers without SA_RESTART).
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    && elf_core::signals::received().is_none() => {}
            other => return other,
        }
    }
}

/// `openat(2)`; `O_CLOEXEC` is always added.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    retry(|| {
        // SAFETY: `name` is a valid C string and `dir` a descriptor we borrow for the call.
        let fd = check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        })?;
        // SAFETY: openat just returned this descriptor and nobody else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// `openat2(2)` of a folder with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the path may not
/// leave `dir`, by `..` or by any symlink. `Ok(None)` when the kernel has no openat2 (before
/// Linux 5.6, or a seccomp filter refusing it); the caller then walks the path itself.
pub fn open_dir_beneath(dir: BorrowedFd<'_>, path: &CStr) -> io::Result<Option<OwnedFd>> {
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return Ok(None);
    }
    // SAFETY: open_how is plain old data; all-zero is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    let mut attempts = 0;
    loop {
        // SAFETY: the arguments are a borrowed descriptor, a valid C string, a pointer to an
        // initialised open_how and its size, as openat2(2) expects.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            let fd =
                libc::c_int::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
            // SAFETY: openat2 just returned this descriptor and nobody else owns it.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOSYS | libc::EPERM) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            // A rename somewhere in the file system raced the lookup: the kernel asks to retry.
            Some(libc::EAGAIN) if attempts < 100 => attempts += 1,
            Some(libc::EINTR) if elf_core::signals::received().is_none() => {}
            _ => return Err(e),
        }
    }
}

/// `fsync(2)` (of a folder, typically).
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: borrowed descriptor.
    retry(|| check(unsafe { libc::fsync(fd.as_raw_fd()) })).map(drop)
}

/// `syncfs(2)`: everything written to the file system holding `fd` goes to disk.
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: borrowed descriptor.
    retry(|| check(unsafe { libc::syncfs(fd.as_raw_fd()) })).map(drop)
}

/// `fstat(2)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer; `fd` is borrowed for the call.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fstatat(2)` without following a final symlink; `Ok(None)` when the name does not exist.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
    // SAFETY: an all-zero stat is a valid buffer for fstatat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string, valid writable buffer, borrowed descriptor.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(r) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file type bits of a stat.
pub fn kind(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// `mkdirat(2)`; an existing entry is not an error (the caller opens it and checks it).
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<bool> {
    // SAFETY: valid C string, borrowed descriptor.
    match retry(|| check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `renameat(2)` within one folder: replaces `to` atomically.
pub fn rename(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: valid C strings, borrowed descriptor.
    check(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
        .map(drop)
}

/// Gives the complete file `from` the name `to` only if `to` does not exist: `renameat2` with
/// `RENAME_NOREPLACE`, or `linkat` then `unlinkat` where the file system has no renameat2.
/// `Ok(false)` when `to` exists (and `from` is left in place).
pub fn rename_noreplace(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<bool> {
    let fd = dir.as_raw_fd();
    // SAFETY: valid C strings, borrowed descriptor.
    let r = unsafe { libc::renameat2(fd, from.as_ptr(), fd, to.as_ptr(), libc::RENAME_NOREPLACE) };
    let e = match check(r) {
        Ok(_) => return Ok(true),
        Err(e) => e,
    };
    match e.raw_os_error() {
        Some(libc::EEXIST) => return Ok(false),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {}
        _ => return Err(e),
    }
    // SAFETY: valid C strings, borrowed descriptor; flags 0 (do not follow symlinks).
    match check(unsafe { libc::linkat(fd, from.as_ptr(), fd, to.as_ptr(), 0) }) {
        Ok(_) => {
            unlinkat(dir, from)?;
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `unlinkat(2)` of a file.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid C string, borrowed descriptor.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

/// `fchmod(2)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: borrowed descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// `fchown(2)`.
pub fn fchown(fd: BorrowedFd<'_>, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: borrowed descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// False only when no process `pid` exists (in our pid namespace).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks for the process's existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The process's umask (read by setting it and putting it back; elf-write has one thread).
pub fn umask() -> libc::mode_t {
    // SAFETY: umask(2) cannot fail; the second call restores the value.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    }
}

/// The effective user id.
pub fn euid() -> libc::uid_t {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective group id.
pub fn egid() -> libc::gid_t {
    // SAFETY: getegid(2) cannot fail.
    unsafe { libc::getegid() }
}

/// Makes a write past the file size limit fail with `EFBIG` instead of killing us with
/// SIGXFSZ, so that the temporary file is removed and the status is 74.
pub fn ignore_sigxfsz() {
    // SAFETY: setting a signal's disposition to SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The longest file or folder name, in bytes (Linux's NAME_MAX; most file systems allow no
/// more).
pub const NAME_MAX: usize = 255;

/// The longest name the file system of folder `dir` allows, in bytes ([`NAME_MAX`] when it
/// does not say, and never more).
pub fn name_max(dir: BorrowedFd<'_>) -> usize {
    // SAFETY: fpathconf only reads the borrowed descriptor.
    let n = unsafe { libc::fpathconf(dir.as_raw_fd(), libc::_PC_NAME_MAX) };
    let max = NAME_MAX;
    usize::try_from(n).map_or(max, |n| n.clamp(1, max))
}

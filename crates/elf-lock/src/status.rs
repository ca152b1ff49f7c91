//! `--status`: who holds each lock, without waiting and without taking anything.
//!
//! One JSON line per lock, in the order given:
//!
//! ```json
//! {"path":"L","kind":"file","exists":true,"held":true,"mode":"exclusive","holder":{...},"stale_record":null,"pids":[4242],"waiters":1}
//! ```
//!
//! `held` and `mode` come from the kernel (`/proc/locks`); `holder` is the holder record only
//! when the kernel confirms it (see `holder.rs`); a record the kernel does not confirm is shown
//! as `stale_record`. `pids` are the processes the kernel names as holding the lock (the ones
//! that took it: a command that inherited the lock is not named), `waiters` how many processes
//! wait for it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde_json::{Map, Value};

use elf_core::{Error, IoContext, Result, exit};

use crate::dirlock;
use crate::holder::{self, Kernel, KernelLock, Liveness, Me};
use elf_core::paths::show;

/// Prints the status of every lock file and lock directory; the first error's status, after
/// reporting the others.
pub fn report(files: &[OsString], dirs: &[OsString]) -> Result<u8> {
    let me = Me::get();
    let mut out = io::stdout().lock();
    let mut code = exit::OK;
    let items = files
        .iter()
        .map(|p| (p, false))
        .chain(dirs.iter().map(|p| (p, true)));
    for (path, is_dir) in items {
        let path = Path::new(path);
        let line = if is_dir {
            dir_status(path, &me)
        } else {
            file_status(path, &me)
        };
        match line {
            Ok(map) => {
                let mut buf = serde_json::to_vec(&Value::Object(map))
                    .map_err(|e| Error::internal(e.to_string()))?;
                buf.push(b'\n');
                out.write_all(&buf)
                    .and_then(|()| out.flush())
                    .ctx("writing output")?;
            }
            Err(e) => {
                if code == exit::OK {
                    code = e.code();
                }
                elf_core::report(&e);
            }
        }
    }
    Ok(code)
}

fn base(path: &Path, kind: &str, exists: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "path".into(),
        Value::from(path.to_string_lossy().into_owned()),
    );
    m.insert("kind".into(), Value::from(kind));
    m.insert("exists".into(), Value::from(exists));
    m.insert("held".into(), Value::from(false));
    m.insert("mode".into(), Value::Null);
    m.insert("holder".into(), Value::Null);
    m.insert("stale_record".into(), Value::Null);
    m.insert("pids".into(), Value::Array(Vec::new()));
    m.insert("waiters".into(), Value::from(0));
    m
}

fn file_status(path: &Path, me: &Me) -> Result<Map<String, Value>> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(base(path, "file", false)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::permission(format!(
                "lock file {} is a symlink; refusing to follow it",
                show(path)
            )));
        }
        Err(e) => {
            return Err(Error::io(
                format_args!("opening lock file {}", show(path)),
                &e,
            ));
        }
    };
    let meta = file
        .metadata()
        .with_ctx(|| format!("reading lock file {}", show(path)))?;
    let kernel = match Kernel::of(&meta) {
        Ok(k) => k,
        Err(_) => probe(&file)?,
    };
    let record = if meta.is_file() {
        holder::read(&file)
    } else {
        None
    };
    let mut m = base(path, "file", true);
    fill(&mut m, &kernel, record, |rec| kernel.confirms(rec, me));
    Ok(m)
}

fn dir_status(path: &Path, me: &Me) -> Result<Map<String, Value>> {
    let Some(dir) = dirlock::open_dir(path)? else {
        return Ok(base(path, "mkdir", false));
    };
    let meta = dir
        .metadata()
        .with_ctx(|| format!("reading lock directory {}", show(path)))?;
    let kernel = Kernel::of(&meta).unwrap_or_default();
    let record = dirlock::read_owner(&dir);
    let mut m = base(path, "mkdir", true);
    // The directory's existence is the lock; its owner holds a shared flock on it.
    m.insert("held".into(), Value::from(true));
    m.insert("mode".into(), Value::from("exclusive"));
    let confirmed = record
        .as_ref()
        .is_some_and(|r| kernel.lists(r, false) && holder::liveness(r, me) == Liveness::Alive);
    let pids: Vec<Value> = kernel.held.iter().map(|k| Value::from(k.pid)).collect();
    m.insert("pids".into(), Value::Array(pids));
    if let Some(rec) = record {
        let key = if confirmed { "holder" } else { "stale_record" };
        m.insert(key.into(), Value::Object(rec));
    }
    Ok(m)
}

fn fill(
    m: &mut Map<String, Value>,
    kernel: &Kernel,
    record: Option<Map<String, Value>>,
    confirm: impl Fn(&Map<String, Value>) -> bool,
) {
    m.insert("held".into(), Value::from(!kernel.held.is_empty()));
    m.insert(
        "mode".into(),
        kernel.mode().map_or(Value::Null, Value::from),
    );
    if let Some(rec) = record {
        let key = if confirm(&rec) {
            "holder"
        } else {
            "stale_record"
        };
        m.insert(key.into(), Value::Object(rec));
    }
    let pids: Vec<Value> = kernel.held.iter().map(|k| Value::from(k.pid)).collect();
    m.insert("pids".into(), Value::Array(pids));
    m.insert("waiters".into(), Value::from(kernel.waiters));
}

/// Without `/proc/locks`: find the mode by trying non-blocking locks and releasing them at
/// once. No pids are known, so no record can be confirmed.
fn probe(file: &File) -> Result<Kernel> {
    let try_op = |op: libc::c_int| -> Result<bool> {
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            // SAFETY: as above.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(false)
        } else {
            Err(Error::io("probing the lock", &e))
        }
    };
    let mut k = Kernel::default();
    if !try_op(libc::LOCK_SH)? {
        k.held.push(KernelLock {
            pid: 0,
            exclusive: true,
        });
    } else if !try_op(libc::LOCK_EX)? {
        k.held.push(KernelLock {
            pid: 0,
            exclusive: false,
        });
    }
    Ok(k)
}

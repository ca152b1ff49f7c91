//! Directory locks (`--mkdir`): their paths made canonical and sorted, so that two callers
//! take them in one order, and each taken within the wait allowed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use elf_core::paths::show;
use elf_core::signals;
use elf_core::{Error, Result};

use crate::acquire::{self, Clock, Wait};
use crate::args::Options;
use crate::dirlock;
use crate::holder::Me;
use crate::lockfiles::gave_up;

/// Absolute, with the parent's symlinks resolved (the last component is never followed),
/// sorted and without duplicates: the canonical order for directory locks, taken after the
/// file locks.
pub fn resolve_dirs(dirs: &[OsString]) -> Result<Vec<PathBuf>> {
    let cwd = if dirs.iter().any(|d| Path::new(d).is_relative()) {
        std::env::current_dir().map_err(|e| Error::io("reading the current directory", &e))?
    } else {
        PathBuf::new()
    };
    let mut out: Vec<PathBuf> = Vec::with_capacity(dirs.len());
    for d in dirs {
        let p = cwd.join(d);
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(Error::usage(format!(
                "--mkdir {}: not a directory name",
                show(&p)
            )));
        };
        let parent = std::fs::canonicalize(parent)
            .map_err(|e| Error::io(format_args!("resolving {}", show(parent)), &e))?;
        out.push(parent.join(name));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Takes one directory lock within the wait allowed; `None` when it was not obtained.
pub fn take_dir(
    path: &Path,
    me: &Me,
    record: &[u8],
    o: &Options,
    clock: &mut Clock,
) -> Result<Option<dirlock::DirLock>> {
    let mut delay = Duration::from_millis(1);
    loop {
        if let Some(sig) = signals::received() {
            return Err(Error::signal(sig));
        }
        if let Some(lock) = dirlock::try_take(path, record)? {
            return Ok(Some(lock));
        }
        match dirlock::examine(path, me, o.stale_after)? {
            dirlock::Seen::Gone | dirlock::Seen::Broken => continue,
            dirlock::Seen::Held(who) => {
                if o.wait == Wait::No || clock.expired() {
                    if !o.quiet {
                        elf_core::note(format_args!("{} {}: {who}", show(path), gave_up(o.wait)));
                    }
                    return Ok(None);
                }
                if clock.notice_due() {
                    elf_core::note(format_args!("waiting for {}: {who}", show(path)));
                }
            }
        }
        // A directory lock gives no wake-up: poll, 1 ms doubling to 50 ms, never past the
        // deadline.
        acquire::nap(clock.remaining().map_or(delay, |left| delay.min(left)));
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

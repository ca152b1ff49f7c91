//! The lock files named: opened without following symlinks (read-only where flock(1) could
//! only read them, with no holder record then), and what to say of one that is held.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use elf_core::{Result, lockfile};

use crate::acquire::Wait;
use crate::holder::{self, Kernel, Me};

/// An open lock file.
pub struct LockFile {
    pub path: PathBuf,
    pub file: File,
    /// Opened for writing, so the holder record can be written.
    pub writable: bool,
}

impl LockFile {
    pub fn open(path: PathBuf, mode: u32) -> Result<LockFile> {
        match lockfile::open(&path, mode) {
            Ok(file) => Ok(LockFile {
                path,
                file,
                writable: true,
            }),
            Err(e) => {
                // flock(1) also locks directories and files it can only read (no write
                // permission, a read-only file system); so do we, without a holder record.
                // Symlinks stay refused.
                let readable =
                    std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() || m.is_file());
                if !readable {
                    return Err(e);
                }
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(
                        libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
                    )
                    .open(&path)
                    .map_err(|_| e)?;
                Ok(LockFile {
                    path,
                    file,
                    writable: false,
                })
            }
        }
    }

    /// Who holds it, for messages.
    pub fn describe(&self, me: &Me) -> String {
        describe(&self.file, me)
    }
}

/// Who holds the lock on an open file, for messages.
pub fn describe(file: &File, me: &Me) -> String {
    let Ok(meta) = file.metadata() else {
        return "held by an unknown process".to_string();
    };
    let kernel = Kernel::of(&meta).unwrap_or_default();
    let rec = if meta.is_file() {
        holder::read(file)
    } else {
        None
    };
    holder::describe(&kernel, rec.as_ref(), me)
}

pub fn gave_up(wait: Wait) -> String {
    match wait {
        Wait::For(d) => format!("not locked within {}s", d.as_secs_f64()),
        _ => "is busy, not waiting".to_string(),
    }
}

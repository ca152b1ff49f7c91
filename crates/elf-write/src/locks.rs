//! One lock per target file, shared by every mode, kept outside the user's tree.
//!
//! # Where the lock files live
//!
//! The lock of a file is `flock(2)` on a lock file whose name is derived from the file's
//! *physical* location (its folder's real path, symlinks resolved, plus its name), so every
//! writer of the same file finds the same lock whatever root, working folder or symlinks it
//! went through:
//!
//! 1. `--lock-dir DIR` when given (every writer of the same files must give the same one);
//! 2. otherwise, the nearest folder above the file that holds a `.git` folder owned by the
//!    user: its `.git/elf-write-locks/` (made with mode 0700). Git ignores it, it is never
//!    committed, and the lock is keyed by the file's path relative to that repository, so the
//!    same tree mounted elsewhere (a container, another mount point) still shares its locks;
//! 3. otherwise `/tmp/elf-write-UID/`, made with mode 0700, which must be a real folder owned
//!    by the user and closed to others (else 77).
//!
//! The lock file's name is a 64-bit FNV-1a hash of that key and a readable form of the file
//! name (`3f1c...-x.md`). A hash collision only makes two files share a lock. Lock files are
//! empty. A lock file deleted while held, or while a writer waited for it, is noticed (its
//! inode no longer matches the name after locking) and the lock is taken again on the new file.
//!
//! # Pruning `/tmp/elf-write-UID/`
//!
//! The folders of 1 and 2 keep their lock files (one per file written through them: a
//! repository's are bounded by its files). The shared fallback of 3 would keep one for every
//! path ever written anywhere outside a repository, so it is pruned: when a writer is done
//! (and every 256 lock files it opened there, for a long stream), it removes every lock file
//! of the folder that nobody holds. A file is removed only while the pruner holds its lock
//! (taken without waiting, so a held one is left alone) and still names the file locked, and
//! the lock is released by closing it afterwards. A writer that opened the file before it was
//! removed then finds, once it has the lock, that the name no longer leads to it, and locks
//! the new file made under the name: two writers of one file never both believe they hold its
//! lock. Whatever a killed writer left is removed by the next writer done. The folder thus
//! holds about as many lock files as there are writers running. Lock files held for this
//! process by an enclosing holder (`ELF_LOCK_HELD`, see `elf_core::held`) count as held.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use elf_core::lockfile;
use elf_core::text::escape;
use elf_core::{Error, IoContext, Result};

use crate::sys;
use crate::target::Folder;

/// Lock files kept open at most, so a long stream does not reopen them for every record
/// (fewer once descriptors ran short: see [`Locks::shrink`]).
const KEEP_OPEN: usize = 256;

/// Lock files opened in the pruned fallback folder between two prunings of it.
const PRUNE_EVERY: usize = 256;

/// Finds and takes the locks of target files.
#[derive(Debug)]
pub struct Locks {
    explicit: Option<PathBuf>,
    timeout: Option<Duration>,
    /// Folder (device, inode) -> (lock folder, key prefix for files in it).
    places: HashMap<(u64, u64), (PathBuf, Vec<u8>)>,
    /// Lock folders already checked.
    checked: Vec<PathBuf>,
    /// Lock files already open, by path.
    open: HashMap<PathBuf, Rc<File>>,
    /// How many may stay open.
    keep_open: usize,
    /// The fallback folder (`/tmp/elf-write-UID/`) once used: pruned when done.
    pruned: Option<PathBuf>,
    /// Lock files opened in it since it was last pruned.
    opened_there: usize,
}

/// A held lock; dropping it releases it (the lock file may stay open for the next write).
#[derive(Debug)]
pub struct Held(Rc<File>);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = lockfile::unlock(&self.0);
    }
}

impl Locks {
    /// `explicit` is `--lock-dir`; `timeout` is how long to wait (None: as long as it takes).
    pub fn new(explicit: Option<PathBuf>, timeout: Option<Duration>) -> Locks {
        Locks {
            explicit,
            timeout,
            places: HashMap::new(),
            checked: Vec::new(),
            open: HashMap::new(),
            keep_open: KEEP_OPEN,
            pruned: None,
            opened_there: 0,
        }
    }

    /// Removes the lock files of the fallback folder that nobody holds (see the module
    /// documentation). Errors are ignored: a lock file left is only litter.
    pub fn prune(&mut self) {
        let Some(dir) = self.pruned.clone() else {
            return;
        };
        self.opened_there = 0;
        // Our own idle lock files there are closed: they are about to go.
        self.open
            .retain(|p, f| !p.starts_with(&dir) || Rc::strong_count(f) > 1);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let named = entry.file_name();
            if !named.as_bytes().ends_with(b".lock") || self.open.contains_key(&path) {
                continue;
            }
            let Ok(file) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(
                    libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
                )
                .open(&path)
            else {
                continue;
            };
            if !matches!(lockfile::try_lock(&file, true), Ok(true)) {
                continue;
            }
            let (Ok(mine), Ok(now)) = (file.metadata(), std::fs::symlink_metadata(&path)) else {
                continue;
            };
            if mine.is_file() && now.dev() == mine.dev() && now.ino() == mine.ino() {
                let _ = std::fs::remove_file(&path);
            }
            // Closing the file releases the lock, after the name is gone.
            drop(file);
        }
    }

    /// Closes the lock files not held now and keeps fewer open from now on: descriptors ran
    /// short (EMFILE).
    pub fn shrink(&mut self) {
        self.keep_open = (self.open.len() / 2).clamp(1, self.keep_open);
        self.open.retain(|_, f| Rc::strong_count(f) > 1);
    }

    /// Takes the lock of file `name` in `folder`, whose (device, inode) is `id`; `shown` names
    /// it in messages.
    pub fn lock(
        &mut self,
        folder: &Folder,
        id: (u64, u64),
        name: &OsStr,
        shown: &str,
    ) -> Result<Held> {
        self.take(folder, id, name, shown, true)?
            .ok_or_else(|| Error::internal("a waiting lock returned without the lock"))
    }

    /// Takes the lock like [`Locks::lock`] if it is free now; None when another writer holds
    /// it.
    pub fn try_lock(
        &mut self,
        folder: &Folder,
        id: (u64, u64),
        name: &OsStr,
        shown: &str,
    ) -> Result<Option<Held>> {
        self.take(folder, id, name, shown, false)
    }

    fn take(
        &mut self,
        folder: &Folder,
        id: (u64, u64),
        name: &OsStr,
        shown: &str,
        wait: bool,
    ) -> Result<Option<Held>> {
        let (dir, prefix) = match self.places.get(&id) {
            Some(p) => p.clone(),
            None => {
                let p = self.place(&folder.real_path()?)?;
                self.places.insert(id, p.clone());
                p
            }
        };
        let mut key = prefix;
        key.push(b'/');
        key.extend_from_slice(name.as_bytes());
        let path = dir.join(lock_name(&key, name));
        if self.opened_there >= PRUNE_EVERY {
            self.prune();
        }
        for _ in 0..100 {
            let file = match self.open.get(&path) {
                Some(f) => f.clone(),
                None => {
                    if self.open.len() >= self.keep_open {
                        // The held ones stay open through their `Held`.
                        self.open.clear();
                    }
                    let f = Rc::new(lockfile::open(&path, 0o666)?);
                    self.open.insert(path.clone(), f.clone());
                    if self.pruned.as_ref().is_some_and(|p| *p == dir) {
                        self.opened_there += 1;
                    }
                    f
                }
            };
            // A try is a plain one: a lock held for us by an enclosing holder is found by the
            // wait that follows a failed try.
            let got = if wait {
                lockfile::take(&file, true, self.timeout)
            } else {
                lockfile::try_lock(&file, true).map(|got| {
                    if got {
                        lockfile::Got::Locked
                    } else {
                        lockfile::Got::Busy
                    }
                })
            }
            .with_ctx(|| format!("locking {shown}"))?;
            if got == lockfile::Got::Enclosed {
                // Held for us by an enclosing holder: nothing to check or release.
                return Ok(Some(Held(file)));
            }
            let got = got == lockfile::Got::Locked;
            if !got && !wait {
                return Ok(None);
            }
            if !got {
                return Err(Error::temporary(format!(
                    "{shown}: lock not obtained within {:?} (held by another writer: {})",
                    self.timeout.unwrap_or_default(),
                    escape(&path.to_string_lossy())
                )));
            }
            let held = Held(file);
            // The lock file may have been deleted (and made again) by someone else.
            let mine = held.0.metadata().ctx("reading a lock file")?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == mine.dev() && now.ino() == mine.ino() => {
                    return Ok(Some(held));
                }
                _ => {
                    self.open.remove(&path);
                }
            }
        }
        Err(Error::temporary(format!(
            "{shown}: its lock file keeps being replaced"
        )))
    }

    /// Where the locks of files in the real folder `real` go, and their key prefix.
    fn place(&mut self, real: &Path) -> Result<(PathBuf, Vec<u8>)> {
        if let Some(dir) = self.explicit.clone() {
            self.check_dir(&dir, false, false)?;
            return Ok((dir, real.as_os_str().as_bytes().to_vec()));
        }
        let me = sys::euid();
        for top in real.ancestors() {
            let git = top.join(".git");
            let Ok(meta) = std::fs::symlink_metadata(&git) else {
                continue;
            };
            if meta.file_type().is_dir() && meta.uid() == me {
                let dir = git.join("elf-write-locks");
                self.check_dir(&dir, true, false)?;
                let rel = real.strip_prefix(top).unwrap_or(real);
                return Ok((dir, rel.as_os_str().as_bytes().to_vec()));
            }
        }
        let dir = PathBuf::from(format!("/tmp/elf-write-{me}"));
        self.check_dir(&dir, true, true)?;
        self.pruned = Some(dir.clone());
        Ok((dir, real.as_os_str().as_bytes().to_vec()))
    }

    /// Makes the lock folder if missing (mode 0700) and checks it is a real folder, owned by
    /// us when `owned`, closed to others when `private`.
    fn check_dir(&mut self, dir: &Path, owned: bool, private: bool) -> Result<()> {
        if self.checked.iter().any(|d| d == dir) {
            return Ok(());
        }
        let shown = escape(&dir.to_string_lossy()).into_owned();
        let meta = match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(Error::io(format_args!("making lock folder {shown}"), &e));
                    }
                }
                std::fs::symlink_metadata(dir)
            }
            other => other,
        }
        .with_ctx(|| format!("reading lock folder {shown}"))?;
        if !meta.file_type().is_dir() {
            return Err(Error::permission(format!(
                "lock folder {shown} is not a folder (a symlink?); refusing it"
            )));
        }
        if owned && meta.uid() != sys::euid() {
            return Err(Error::permission(format!(
                "lock folder {shown} belongs to another user; refusing it (use --lock-dir)"
            )));
        }
        if private && meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::permission(format!(
                "lock folder {shown} is open to other users; refusing it (chmod 700 it, or use --lock-dir)"
            )));
        }
        self.checked.push(dir.to_path_buf());
        Ok(())
    }
}

impl Drop for Locks {
    fn drop(&mut self) {
        self.prune();
    }
}

/// The lock file's name for `key`: the hash, and a readable form of the file name.
fn lock_name(key: &[u8], name: &OsStr) -> String {
    let readable: String = name
        .as_bytes()
        .iter()
        .take(40)
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect();
    format!("{:016x}-{readable}.lock", fnv1a(key))
}

/// 64-bit FNV-1a: stable across builds and versions, unlike the standard library's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_readable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            lock_name(b"/memory/x y.md", OsStr::new("x y.md")),
            format!("{:016x}-x_y.md.lock", fnv1a(b"/memory/x y.md"))
        );
    }
}

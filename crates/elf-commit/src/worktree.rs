//! The work tree and the index file: paths hashed into the index (again when a file is
//! replaced meanwhile), entries settled as the commit planned them, the index copy installed,
//! folders walked as `git add DIR` walks them.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::{Index, IndexEntry, IndexTime, Oid};

use elf_core::Error;
use elf_core::paths::show as shown;

use crate::repository::git_error;

/// Which file a path names, and which version of it: a file replaced by rename, or written
/// again, compares different.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    pub fn of(p: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(p).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Writes the index copy and renames it over the index (while `index.lock` is held).
pub fn install_index(idx: &mut Index, scratch: &Path, index_path: &Path) -> Result<(), Error> {
    idx.write()
        .map_err(|e| git_error("writing the index", &e))?;
    std::fs::rename(scratch, index_path)
        .map_err(|e| Error::io(format_args!("replacing {}", shown(index_path)), &e))
}

/// Hashes `p` into the index. libgit2 reads a file as long as it measured it first, and fails
/// when another version was renamed in between (as elf-write does, appending while the
/// commit of its previous records is made): then it is hashed again, as it is now.
pub fn add_path(idx: &mut Index, workdir: &Path, p: &Path) -> Result<(), Error> {
    let full = workdir.join(p);
    let mut before = FileId::of(&full);
    let mut tries = 0;
    loop {
        match idx.add_path(p) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let now = FileId::of(&full);
                if tries == 5 || now.is_none() || now == before {
                    return Err(git_error(format_args!("adding {}", shown(p)), &e));
                }
                before = now;
                tries += 1;
            }
        }
    }
}

/// Gives every path the jobs named its index entry as [`Git::index_plan`] planned it (`want`;
/// a path left out keeps the entry it had): the entry of the whole file as hashed, with its
/// stat data, when that is it; the entry it had when that was it already; else the blob with
/// no stat data (all zero), so that git compares it with the file by content and shows what
/// the index does not hold (the user's changes not staged, later appends not committed yet)
/// as a change not staged. True when the index changed.
pub fn settle_index(
    idx: &mut Index,
    olds: &BTreeMap<PathBuf, Option<IndexEntry>>,
    whole: &BTreeMap<PathBuf, Option<(Oid, u32)>>,
    want: &BTreeMap<PathBuf, Option<(Oid, u32)>>,
) -> Result<bool, Error> {
    let mut dirty = false;
    for (p, old) in olds {
        let add = |idx: &mut Index, e: &IndexEntry| {
            idx.add(e)
                .map_err(|e| git_error(format_args!("adding {}", shown(p)), &e))
        };
        let remove = |idx: &mut Index| -> Result<(), Error> {
            if idx.get_path(p, 0).is_some() {
                idx.remove_path(p)
                    .map_err(|e| git_error(format_args!("removing {}", shown(p)), &e))?;
            }
            Ok(())
        };
        match (want.get(p), old) {
            (Some(Some((id, mode))), _) if whole.get(p) == Some(&Some((*id, *mode))) => {}
            (Some(Some((id, mode))), Some(o)) if o.id == *id && o.mode == *mode => add(idx, o)?,
            (Some(Some((id, mode))), _) => {
                let unstat = IndexEntry {
                    ctime: IndexTime::new(0, 0),
                    mtime: IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode: *mode,
                    uid: 0,
                    gid: 0,
                    file_size: 0,
                    id: *id,
                    flags: 0,
                    flags_extended: 0,
                    path: p.as_os_str().as_bytes().to_vec(),
                };
                add(idx, &unstat)?;
            }
            (Some(None), _) | (None, None) => remove(idx)?,
            (None, Some(o)) => add(idx, o)?,
        }
        dirty |= match (old, idx.get_path(p, 0)) {
            (None, None) => false,
            (Some(o), Some(n)) => !same_entry(o, &n),
            _ => true,
        };
    }
    Ok(dirty)
}

pub fn same_entry(a: &IndexEntry, b: &IndexEntry) -> bool {
    a.id == b.id
        && a.mode == b.mode
        && a.file_size == b.file_size
        && a.mtime == b.mtime
        && a.ctime == b.ctime
        && a.ino == b.ino
        && a.dev == b.dev
        && a.uid == b.uid
        && a.gid == b.gid
        && a.flags == b.flags
        && a.flags_extended == b.flags_extended
}

/// `dir/` as bytes, for matching index paths.
pub fn dir_prefix(p: &Path) -> Vec<u8> {
    let mut v = p.as_os_str().as_bytes().to_vec();
    v.push(b'/');
    v
}

/// Files (and symlinks) below `rel`, skipping `.git` and nested repositories.
pub fn walk_dir(workdir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let dir = workdir.join(rel);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(e) => return Err(Error::io(format_args!("reading {}", shown(rel)), &e)),
    };
    let mut names: Vec<_> = entries.flatten().collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name();
        if name.eq_ignore_ascii_case(".git") {
            continue;
        }
        let child = rel.join(&name);
        let ft = e
            .file_type()
            .map_err(|err| Error::io(format_args!("reading {}", shown(&child)), &err))?;
        if ft.is_dir() {
            if e.path().join(".git").exists() {
                elf_core::warn(format_args!(
                    "skipping nested git repository {}",
                    shown(&child)
                ));
                continue;
            }
            walk_dir(workdir, &child, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            out.push(child);
        }
        // FIFOs, sockets and devices are left out, as `git add DIR` leaves them.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_walked_as_git_add_walks_it() {
        let dir = std::env::temp_dir().join(format!("elf-commit-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["top/b", "top/.git", "top/nested/.git", "top/a"] {
            std::fs::create_dir_all(dir.join(d)).expect("mkdir");
        }
        for f in [
            "top/b/2",
            "top/a/1",
            "top/.git/HEAD",
            "top/nested/x",
            "top/z",
        ] {
            std::fs::write(dir.join(f), "x").expect("write");
        }
        let mut out = Vec::new();
        walk_dir(&dir, Path::new("top"), &mut out).expect("walk");
        let names: Vec<_> = out
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["top/a/1", "top/b/2", "top/z"]);
        let mut none = Vec::new();
        walk_dir(&dir, Path::new("missing"), &mut none).expect("a missing folder is empty");
        assert!(none.is_empty());
        assert_eq!(dir_prefix(Path::new("a/b")), b"a/b/");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Root confinement: a record's relative path becomes a folder descriptor and one file name,
//! without any race that could lead outside the root.
//!
//! 1. The path is checked as text: absolute paths and a `..` that climbs above the root are
//!    refused (65, as every tool refuses a path whose text leaves its root: see
//!    [`elf_core::paths`]); `.`, empty components and `a/..` pairs are removed; the last component
//!    must be a file name.
//! 2. The folder part is opened from the root's descriptor with `openat2(2)` and
//!    `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the kernel refuses any symlink that leads
//!    outside the root (77). Missing folders are made one by one, each opened the same way.
//! 3. Where the kernel has no openat2 (before Linux 5.6), the folders are opened one component
//!    at a time with `O_NOFOLLOW`, so every symlink on the way is refused, even one that would
//!    stay inside the root.
//!
//! From then on every operation is relative to the folder's descriptor; the last component is
//! never followed if it is a symlink (see `ops.rs`).

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use elf_core::text::escape;
use elf_core::{Error, IoContext, Result, paths};

use crate::sys;

pub use crate::sys::NAME_MAX;

/// The error for a path with a name longer than the file system allows (65: a bad record).
pub fn too_long(shown: &str, len: usize) -> Error {
    Error::data(format!(
        "path \"{shown}\" has a name of {len} bytes: the name is too long (at most {NAME_MAX} bytes)"
    ))
}

/// A path relative to the root, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    /// The folders, outermost first.
    pub parents: Vec<OsString>,
    /// The file name.
    pub name: OsString,
}

impl RelPath {
    /// Checks and normalises a relative path.
    ///
    /// Absolute paths and `..` above the root leave it, 65 as for every tool (see
    /// [`elf_core::paths`]); so does an empty path, a NUL byte,
    /// a name (file or folder) over [`NAME_MAX`] bytes, or a path that does not end with a
    /// file name gives 65.
    pub fn parse(path: &OsStr) -> Result<RelPath> {
        let bytes = path.as_bytes();
        let shown = escape(&path.to_string_lossy()).into_owned();
        if bytes.is_empty() {
            return Err(Error::data("empty path"));
        }
        if bytes.contains(&0) {
            return Err(Error::data(format!("path \"{shown}\" contains a NUL byte")));
        }
        if bytes[0] == b'/' {
            return Err(paths::outside_root(format!(
                "absolute path \"{shown}\" refused: paths are relative to the root"
            )));
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut last_is_name = false;
        for c in bytes.split(|&b| b == b'/') {
            last_is_name = false;
            if c.len() > NAME_MAX {
                return Err(too_long(&shown, c.len()));
            }
            match c {
                b"" | b"." => {}
                b".." => {
                    if parts.pop().is_none() {
                        return Err(paths::outside_root(format!(
                            "path \"{shown}\" leaves the root"
                        )));
                    }
                }
                name => {
                    parts.push(name);
                    last_is_name = true;
                }
            }
        }
        let Some(name) = parts.pop().filter(|_| last_is_name) else {
            return Err(Error::data(format!(
                "path \"{shown}\" does not end with a file name"
            )));
        };
        Ok(RelPath {
            parents: parts
                .iter()
                .map(|p| OsStr::from_bytes(p).to_os_string())
                .collect(),
            name: OsStr::from_bytes(name).to_os_string(),
        })
    }

    /// The same folder with another file name.
    pub fn with_name(&self, name: OsString) -> RelPath {
        RelPath {
            parents: self.parents.clone(),
            name,
        }
    }

    /// The folder part joined by `/` (empty for the root itself).
    pub fn folder_bytes(&self) -> Vec<u8> {
        self.parents
            .iter()
            .map(|p| p.as_bytes())
            .collect::<Vec<_>>()
            .join(&b'/')
    }

    /// The normalised path as text, `/`-separated (the `write.path` result).
    pub fn display(&self) -> String {
        let mut s = String::new();
        for p in &self.parents {
            s.push_str(&p.to_string_lossy());
            s.push('/');
        }
        s.push_str(&self.name.to_string_lossy());
        s
    }
}

/// The root folder, held open.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// A resolved folder inside the root.
#[derive(Debug)]
pub struct Folder {
    /// Its descriptor (opened for reading, so it can be fsynced and listed).
    pub fd: OwnedFd,
    /// A path to it, for messages and as a fallback where /proc is missing.
    pub path: PathBuf,
}

impl Folder {
    /// Borrows the descriptor.
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The folder's physical absolute path: what its descriptor points at (through
    /// /proc/self/fd), or the canonical form of its path.
    pub fn real_path(&self) -> Result<PathBuf> {
        use std::os::fd::AsRawFd;
        let link = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        match std::fs::read_link(&link) {
            Ok(p) if p.is_absolute() => Ok(p),
            _ => std::fs::canonicalize(&self.path).with_ctx(|| {
                format!(
                    "finding the real path of {}",
                    escape(&self.path.to_string_lossy())
                )
            }),
        }
    }

    /// Flushes the folder's entries to disk.
    pub fn sync(&self) -> Result<()> {
        sys::fsync(self.dir())
            .with_ctx(|| format!("syncing folder {}", escape(&self.path.to_string_lossy())))
    }
}

impl Root {
    /// Opens the root folder (the root itself may be reached through symlinks).
    pub fn open(path: &Path) -> Result<Root> {
        Root::open_as(path, "root folder")
    }

    /// [`Root::open`], naming the folder `what` in an error (the stream form's target folder
    /// is not a root to the user).
    pub fn open_as(path: &Path, what: &str) -> Result<Root> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .with_ctx(|| format!("opening {what} {}", escape(&path.to_string_lossy())))?;
        Ok(Root {
            fd: OwnedFd::from(file),
            path: path.to_path_buf(),
        })
    }

    /// Opens the folder of `rel`, making missing folders when `create` (synced when `sync`).
    pub fn folder(&self, rel: &RelPath, create: bool, sync: bool) -> Result<Folder> {
        let mut path = self.path.clone();
        path.extend(&rel.parents);
        let shown = || escape(&rel.display()).into_owned();
        let fd = if rel.parents.is_empty() {
            self.fd.try_clone().ctx("duplicating the root descriptor")?
        } else {
            let joined = c_path(&rel.folder_bytes())?;
            match sys::open_dir_beneath(self.fd.as_fd(), &joined) {
                Ok(Some(fd)) => fd,
                Ok(None) => self.walk_nofollow(rel, create, sync)?,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    self.make_beneath(rel, sync)?
                }
                Err(e) => return Err(resolve_error(&shown(), &e)),
            }
        };
        Ok(Folder { fd, path })
    }

    /// Makes the missing folders of `rel`, each opened from the root with openat2.
    fn make_beneath(&self, rel: &RelPath, sync: bool) -> Result<OwnedFd> {
        let shown = escape(&rel.display()).into_owned();
        let mut cur = self.fd.try_clone().ctx("duplicating the root descriptor")?;
        let mut prefix: Vec<u8> = Vec::new();
        for part in &rel.parents {
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(part.as_bytes());
            let c = c_path(&prefix)?;
            cur = match sys::open_dir_beneath(self.fd.as_fd(), &c) {
                Ok(Some(fd)) => fd,
                Ok(None) => return self.walk_nofollow(rel, true, sync),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = sys::cname(part).map_err(|e| resolve_error(&shown, &e))?;
                    if sys::mkdirat(cur.as_fd(), &name, 0o777)
                        .map_err(|e| resolve_error(&shown, &e))?
                        && sync
                    {
                        sys::fsync(cur.as_fd()).ctx("syncing a new folder's parent")?;
                    }
                    match sys::open_dir_beneath(self.fd.as_fd(), &c) {
                        Ok(Some(fd)) => fd,
                        Ok(None) => return self.walk_nofollow(rel, true, sync),
                        Err(e) => return Err(resolve_error(&shown, &e)),
                    }
                }
                Err(e) => return Err(resolve_error(&shown, &e)),
            };
        }
        Ok(cur)
    }

    /// The fallback without openat2: one component at a time, refusing every symlink.
    fn walk_nofollow(&self, rel: &RelPath, create: bool, sync: bool) -> Result<OwnedFd> {
        let shown = escape(&rel.display()).into_owned();
        let mut cur = self.fd.try_clone().ctx("duplicating the root descriptor")?;
        for part in &rel.parents {
            let name = sys::cname(part).map_err(|e| resolve_error(&shown, &e))?;
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            let next = match sys::openat(cur.as_fd(), &name, flags, 0) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    if sys::mkdirat(cur.as_fd(), &name, 0o777)
                        .map_err(|e| resolve_error(&shown, &e))?
                        && sync
                    {
                        sys::fsync(cur.as_fd()).ctx("syncing a new folder's parent")?;
                    }
                    sys::openat(cur.as_fd(), &name, flags, 0)
                }
                other => other,
            };
            cur = match next {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    let is_link = sys::lstatat(cur.as_fd(), &name)
                        .ok()
                        .flatten()
                        .is_some_and(|st| sys::kind(&st) == libc::S_IFLNK);
                    let e = if is_link {
                        std::io::Error::from_raw_os_error(libc::ELOOP)
                    } else {
                        e
                    };
                    return Err(resolve_error(&shown, &e));
                }
                Err(e) => return Err(resolve_error(&shown, &e)),
            };
        }
        Ok(cur)
    }
}

fn c_path(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::data("path contains a NUL byte"))
}

/// The error for a folder that could not be resolved.
fn resolve_error(shown: &str, e: &std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EXDEV | libc::ELOOP) => Error::permission(format!(
            "{shown}: refused: a symlink on the way leads outside the root (or is not allowed here)"
        )),
        Some(libc::ENOTDIR) => Error::data(format!("{shown}: a folder on the way is not a folder")),
        _ => Error::io(shown, e),
    }
}

/// Opens a file for reading without following a symlink (used to compare contents).
pub fn open_read(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<File> {
    let c = sys::cname(name)?;
    let fd = sys::openat(
        dir,
        &c,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0,
    )?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<String, u8> {
        RelPath::parse(OsStr::new(s))
            .map(|r| r.display())
            .map_err(|e| e.code())
    }

    #[test]
    fn paths_are_normalised_and_escapes_refused() {
        assert_eq!(parse("a/b.md"), Ok("a/b.md".into()));
        assert_eq!(parse("./a//./b.md"), Ok("a/b.md".into()));
        assert_eq!(parse("a/../b.md"), Ok("b.md".into()));
        assert_eq!(parse("../x"), Err(65));
        assert_eq!(parse("a/../../x"), Err(65));
        assert_eq!(parse("/etc/x"), Err(65));
        assert_eq!(parse(""), Err(65));
        assert_eq!(parse("a/"), Err(65));
        assert_eq!(parse("a/.."), Err(65));
        assert_eq!(parse("."), Err(65));
        assert_eq!(parse("a\0b"), Err(65));
        let long = "n".repeat(256);
        assert_eq!(parse(&long), Err(65));
        assert_eq!(parse(&format!("{long}/x")), Err(65));
        // Removed by a `..`, it is still refused: it was given.
        assert_eq!(parse(&format!("{long}/../x")), Err(65));
        let max = "m".repeat(255);
        assert_eq!(parse(&format!("{max}/{max}")), Ok(format!("{max}/{max}")));
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("elf-write-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root/inside")).expect("scratch");
        std::fs::create_dir_all(d.join("outside")).expect("scratch");
        std::os::unix::fs::symlink(d.join("outside"), d.join("root/out")).expect("symlink");
        std::os::unix::fs::symlink("inside", d.join("root/in")).expect("symlink");
        d
    }

    fn folder_code(root: &Root, p: &str, create: bool) -> std::result::Result<(), u8> {
        let rel = RelPath::parse(OsStr::new(p)).map_err(|e| e.code())?;
        root.folder(&rel, create, false)
            .map(drop)
            .map_err(|e| e.code())
    }

    #[test]
    fn both_resolvers_refuse_symlinks_leading_out() {
        let d = scratch("resolve");
        let root = Root::open(&d.join("root")).expect("root");
        // With openat2 (this kernel has it): out refused, in allowed, missing folders made.
        assert_eq!(folder_code(&root, "out/x", true), Err(77));
        assert_eq!(folder_code(&root, "in/x", true), Ok(()));
        assert_eq!(folder_code(&root, "new/deeper/x", true), Ok(()));
        assert!(d.join("root/new/deeper").is_dir());
        assert_eq!(folder_code(&root, "missing/x", false).err(), Some(66));
        // The fallback refuses every symlink.
        let walk = |p: &str| {
            let rel = RelPath::parse(OsStr::new(p)).map_err(|e| e.code())?;
            root.walk_nofollow(&rel, true, false)
                .map(drop)
                .map_err(|e| e.code())
        };
        assert_eq!(walk("out/x"), Err(77));
        assert_eq!(walk("in/x"), Err(77));
        assert_eq!(walk("new2/deeper/x"), Ok(()));
        assert!(d.join("root/new2/deeper").is_dir());
        assert!(
            std::fs::read_dir(d.join("outside"))
                .expect("outside")
                .next()
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! Paths named for a commit: inside the work tree, normalised, never inside `.git`, never
//! through a symbolic link.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use elf_core::text::escape;
use elf_core::{Error, paths};

/// Turns `p` into a path relative to the work tree: plain components separated by `/`, no `.`
/// or `..`. A relative `p` starts from `base` (the work tree for records, the current
/// directory for operands). `workdir` and `base` are canonical.
///
/// Refused: a path outside the work tree (65, see [`elf_core::paths`]), the work tree itself, a path inside `.git` or
/// containing NUL (65); a path that goes through a symbolic link (77), since git would commit
/// the link, not what lies behind it.
pub fn relative(workdir: &Path, base: &Path, p: &Path) -> Result<PathBuf, Error> {
    let shown = || escape(&p.to_string_lossy()).into_owned();
    if p.as_os_str().is_empty() {
        return Err(Error::data("empty path"));
    }
    if p.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::data(format!("path {} contains a NUL byte", shown())));
    }
    let abs = paths::normalize(&base.join(p));
    let rel = match abs.strip_prefix(workdir) {
        Ok(r) => r.to_path_buf(),
        // Outside lexically; it may still be inside through a symlink on the way (a link to
        // the repository, a symlinked home). Resolve the parent and look again.
        Err(_) => {
            match physical(&abs).and_then(|a| a.strip_prefix(workdir).ok().map(Path::to_path_buf)) {
                Some(r) => r,
                None => {
                    return Err(paths::outside_root(format!(
                        "path {} is outside the work tree {}",
                        shown(),
                        escape(&workdir.to_string_lossy())
                    )));
                }
            }
        }
    };
    if rel.as_os_str().is_empty() {
        return Err(Error::data(format!(
            "path {} is the work tree itself; name the files to commit",
            shown()
        )));
    }
    if rel
        .components()
        .any(|c| c.as_os_str().eq_ignore_ascii_case(OsStr::new(".git")))
    {
        return Err(Error::data(format!("path {} is inside .git", shown())));
    }
    // Every directory on the way must be a real directory, not a symlink.
    let mut prefix = workdir.to_path_buf();
    let mut comps = rel.components().peekable();
    while let Some(c) = comps.next() {
        if comps.peek().is_none() {
            break;
        }
        prefix.push(c);
        match std::fs::symlink_metadata(&prefix) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::permission(format!(
                    "path {} goes through the symbolic link {}; refusing it",
                    shown(),
                    escape(
                        &prefix
                            .strip_prefix(workdir)
                            .unwrap_or(&prefix)
                            .to_string_lossy()
                    )
                )));
            }
            Ok(m) if m.is_dir() => {}
            // Missing, or a file: the path cannot exist below it (a deletion at most).
            _ => break,
        }
    }
    Ok(rel)
}

/// The path with its parent directory resolved through symlinks, when the parent exists.
fn physical(abs: &Path) -> Option<PathBuf> {
    let name = abs.file_name()?;
    let parent = abs.parent()?.canonicalize().ok()?;
    Some(parent.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(p: &str) -> Result<String, u8> {
        let wd = Path::new("/nonexistent-elf-wt");
        relative(wd, &wd.join("sub"), Path::new(p))
            .map(|r| r.to_string_lossy().into_owned())
            .map_err(|e| e.code())
    }

    #[test]
    fn normalises_and_confines() {
        assert_eq!(rel("a.md"), Ok("sub/a.md".into()));
        assert_eq!(rel("./x/../b//c.md"), Ok("sub/b/c.md".into()));
        assert_eq!(rel("../top.md"), Ok("top.md".into()));
        assert_eq!(rel("/nonexistent-elf-wt/m/x.md"), Ok("m/x.md".into()));
        assert_eq!(rel("../../etc/passwd"), Err(65));
        assert_eq!(rel("/etc/passwd"), Err(65));
        assert_eq!(rel(".."), Err(65));
        assert_eq!(rel("../.git/config"), Err(65));
        assert_eq!(rel("../.GIT/hooks/x"), Err(65));
        assert_eq!(rel(""), Err(65));
        assert_eq!(rel("a\0b"), Err(65));
    }
}

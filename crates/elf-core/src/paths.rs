//! Paths confined to a root, and paths in messages.
//!
//! elf-write's root and elf-commit's work tree are roots: every path a record or an operand
//! names must stay below its root. One rule decides the status of a path that leaves it, for
//! every tool: what the text of the path alone shows to be outside (an absolute path elf-write
//! cannot take, a `..` that climbs above the root) is a bad argument or record, **65**, like
//! any other malformed value: no retry and no permission can make it right. What only the file
//! system shows (a symbolic link on the way that leads out, or that git would commit instead
//! of what lies behind it) is a refusal for safety, **77**.

use std::path::{Component, Path, PathBuf};

use crate::Error;
use crate::text::escape;

/// The error for a path that leaves its root, as its text shows (65; see the module
/// documentation). `message` names the path and says how it leaves.
pub fn outside_root(message: impl Into<String>) -> Error {
    Error::data(message)
}

/// `.` and `..` removed lexically, without looking at the file system (`/..` stays `/`; a
/// relative path's leading `..` that has nothing to climb is dropped, so compare the result
/// with the root it must stay below).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A path as a message shows it: lossy UTF-8, control characters escaped.
pub fn show(p: &Path) -> String {
    escape(&p.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_the_root_is_a_data_error() {
        assert_eq!(
            outside_root("path ../x leaves the root").code(),
            crate::exit::DATAERR
        );
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(normalize(Path::new("/..")), Path::new("/"));
        assert_eq!(normalize(Path::new("a//b/")), Path::new("a/b"));
    }

    #[test]
    fn show_escapes_control_characters() {
        assert_eq!(show(Path::new("a\x1b[2Jb")), "a\\x1b[2Jb");
    }
}

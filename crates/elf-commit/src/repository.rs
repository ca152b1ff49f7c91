//! Opening a repository and reading its index: which repositories elf-commit works in (a work
//! tree, found through a `.git` file or not), which it refuses and with what status, and how
//! an index git wrote with extensions libgit2 cannot read is read anyway. Also [`git_error`],
//! the exit status of a libgit2 error.

use std::fmt::Display;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use git2::{ErrorClass, ErrorCode, Index, ObjectType, Repository};

use elf_core::Error;
use elf_core::paths::show as shown;
use elf_core::text::escape;

/// Opens the repository: exactly `dir` when given, else the one containing the current
/// directory. With `init`, creates it (at `dir`, or here) when there is none.
pub fn open(dir: Option<&Path>, init: bool) -> Result<Repository, Error> {
    // Every object elf-commit links into a tree or commit was just written or read from the
    // repository, so libgit2 need not look each one up again.
    git2::opts::strict_object_creation(false);
    // Keep trees of any reasonable size in libgit2's object cache (the default stops at 4 KiB,
    // so a folder of a thousand entries would be read and inflated again for every lookup).
    // SAFETY: sets a libgit2 global before any thread exists; elf-commit starts none.
    let _ = unsafe { git2::opts::set_cache_object_limit(ObjectType::Tree, 16 << 20) };
    // zlib takes a few hundred KiB for every object written; let malloc keep that memory
    // instead of returning it to the kernel and faulting it in again for the next object.
    // SAFETY: mallopt only tunes glibc's allocator; it is called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    let (found, place) = match dir {
        Some(d) => (Repository::open(d), d.to_path_buf()),
        None => {
            let here = std::env::current_dir()
                .map_err(|e| Error::io("finding the current directory", &e))?;
            (Repository::discover(&here), here)
        }
    };
    if found.is_err() {
        if let Some(e) = broken_gitfile(&place) {
            return Err(e);
        }
    }
    match found {
        Ok(r) => Ok(r),
        Err(e) if e.code() == ErrorCode::NotFound && dir.is_some() && !init => {
            // Inside another repository's work tree: say so, and commit nothing there.
            let outer = Repository::discover(&place)
                .ok()
                .and_then(|r| r.workdir().map(Path::to_path_buf));
            Err(Error::no_input(match outer {
                Some(top) => format!(
                    "{} is not a git repository: it is a folder in the work tree {} (give \
                     --repo {}, or --init to make it a repository of its own)",
                    shown(&place),
                    shown(&top),
                    shown(&top)
                ),
                None => format!(
                    "{} is not a git repository (use --init to create one)",
                    shown(&place)
                ),
            }))
        }
        Err(e) if e.code() == ErrorCode::NotFound && init => {
            Repository::init(&place).map_err(|e| {
                git_error(
                    format_args!("creating a repository in {}", shown(&place)),
                    &e,
                )
            })
        }
        Err(e) if e.code() == ErrorCode::NotFound => Err(Error::no_input(match dir {
            Some(_) => format!(
                "{} is not a git repository (use --init to create one)",
                shown(&place)
            ),
            None => format!(
                "no git repository at or above {} (use --repo DIR, or --init to create one)",
                shown(&place)
            ),
        })),
        Err(e) => Err(unsupported_repository(&e).unwrap_or_else(|| {
            git_error(
                format_args!("opening the repository at {}", shown(&place)),
                &e,
            )
        })),
    }
}

/// A lock file named `.git/NAME` in the work tree when `.git` there is a file (a linked
/// worktree, a submodule): `NAME` in the git directory it names, as git's own files are.
pub fn through_gitfile(lock: &Path, workdir: &Path, gitdir: &Path) -> Option<PathBuf> {
    let name = lock.file_name()?;
    let dotgit = lock.parent()?;
    if dotgit.file_name()? != ".git" || !std::fs::symlink_metadata(dotgit).ok()?.is_file() {
        return None;
    }
    let top = match dotgit.parent()? {
        p if p.as_os_str().is_empty() => Path::new("."),
        p => p,
    };
    (top.canonicalize().ok()? == workdir).then(|| gitdir.join(name))
}

/// When `place/.git` is a file (a linked worktree, a submodule, `git init
/// --separate-git-dir`) that names no git directory, why: the repository is broken, not
/// missing, so nothing is created over it (git refuses too).
fn broken_gitfile(place: &Path) -> Option<Error> {
    use std::io::Read;
    let dotgit = place.join(".git");
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&dotgit)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    let _ = (&mut f).take(4096).read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    let Some(target) = text.lines().next().and_then(|l| l.strip_prefix("gitdir:")) else {
        return Some(Error::no_input(format!(
            "{} is a file but not a \"gitdir: PATH\" line; nothing was created",
            shown(&dotgit)
        )));
    };
    let target = place.join(target.trim());
    if target.join("HEAD").exists() {
        return None;
    }
    Some(Error::no_input(format!(
        "{} names the git directory {}, which is not one (the worktree or submodule it \
         belonged to is gone); nothing was created",
        shown(&dotgit),
        shown(&target)
    )))
}

/// The exit status of a repository elf-commit cannot work in (`EX_UNAVAILABLE`): a permanent
/// failure, never retried, that no later run completes.
pub const UNSUPPORTED: u8 = elf_core::exit::UNAVAILABLE;

/// `unsupported: WHAT` with exit status [`UNSUPPORTED`].
pub fn unsupported(what: impl Display) -> Error {
    Error::new(UNSUPPORTED, format!("unsupported: {what}"))
}

/// The repository format libgit2 refused to open, as an unsupported error; `None` when the
/// error is of another kind.
fn unsupported_repository(e: &git2::Error) -> Option<Error> {
    let msg = e.message();
    if let Some(rest) = msg.strip_prefix("unknown object format '") {
        let format = escape(rest.trim_end_matches('\'')).into_owned();
        return Some(unsupported(format_args!(
            "{format} object format (extensions.objectFormat = {format}); elf-commit works in \
             SHA-1 repositories only"
        )));
    }
    if let Some(name) = msg.strip_prefix("unsupported extension name ") {
        return Some(unsupported(format_args!(
            "repository extension {}",
            escape(name)
        )));
    }
    if msg.starts_with("unsupported repository version") {
        return Some(unsupported(escape(msg)));
    }
    None
}

/// Reads the index file at `file`, a copy elf-commit owns. An index libgit2 cannot read
/// because git wrote it split (`core.splitIndex`: the `link` extension) or sparse
/// (`index.sparse`: `sdir`) is first rewritten whole, in place, by git itself
/// (`git update-index --no-split-index` with `index.sparse` off): git reads a whole index as
/// well, and splits it or makes it sparse again the next time it writes it. Any other index
/// libgit2 cannot read (another version, another mandatory extension) is unsupported (69).
pub fn read_index(gitdir: &Path, file: &Path) -> Result<Index, Error> {
    let e = match Index::open(file) {
        Ok(idx) => return Ok(idx),
        Err(e) => e,
    };
    let Some(ext) = mandatory_extension(&e) else {
        return Err(index_error(&e));
    };
    let what = match ext.as_str() {
        "link" => "split index (core.splitIndex)",
        "sdir" => "sparse index (index.sparse)",
        _ => {
            return Err(unsupported(format_args!(
                "index extension '{}'",
                escape(&ext)
            )));
        }
    };
    rewrite_whole(gitdir, file).map_err(|why| unsupported(format_args!("{what}: {why}")))?;
    Index::open(file).map_err(|e| match mandatory_extension(&e) {
        Some(_) => unsupported(format_args!("{what}: git left it {what}")),
        None => index_error(&e),
    })
}

/// The mandatory index extension libgit2 refused, from its error.
pub fn mandatory_extension(e: &git2::Error) -> Option<String> {
    let rest = e
        .message()
        .split("unsupported mandatory extension: '")
        .nth(1)?;
    Some(rest.split('\'').next().unwrap_or(rest).to_string())
}

/// An index that cannot be read: unsupported when libgit2 names its version as the reason.
pub fn index_error(e: &git2::Error) -> Error {
    if e.message().contains("incorrect header version") {
        unsupported(format_args!("index version ({})", escape(e.message())))
    } else {
        git_error("reading the index", e)
    }
}

/// Has git rewrite the index file `file` of the repository at `gitdir` as one whole index,
/// neither split nor sparse. Git is run with its hooks and helpers off (no fsmonitor), on
/// this file only (`GIT_INDEX_FILE`): it takes `file.lock`, never `index.lock`.
fn rewrite_whole(gitdir: &Path, file: &Path) -> Result<(), String> {
    let out = std::process::Command::new("git")
        .env("GIT_DIR", gitdir)
        .env("GIT_INDEX_FILE", file)
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_COMMON_DIR")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .args([
            "-c",
            "core.splitIndex=false",
            "-c",
            "index.sparse=false",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "advice.sparseIndexExpanded=false",
            "update-index",
            "--no-split-index",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("git, needed to read it, could not be run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    Err(format!(
        "git could not rewrite it whole ({}): {}",
        out.status,
        escape(line.trim())
    ))
}

/// A libgit2 error with what was being done, and the exit status it stands for.
pub fn git_error(context: impl Display, e: &git2::Error) -> Error {
    let msg = format!("{context}: {}", escape(e.message()));
    match e.code() {
        ErrorCode::Locked => Error::temporary(msg),
        ErrorCode::NotFound => Error::no_input(msg),
        ErrorCode::Owner => Error::permission(msg),
        ErrorCode::BareRepo => Error::usage(msg),
        _ if e.class() == ErrorClass::Invalid => Error::data(msg),
        _ => Error::io_failure(msg),
    }
}

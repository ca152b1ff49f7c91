//! elf-commit's record parser: the `commit` key and the paths elf-write reported (`job.rs`),
//! the path rules (`paths.rs`) and the message cleaning and date parsing (`message.rs`).
//!
//! The work tree is a real folder holding a symlink to `/`, a folder with a symlink back up,
//! and a file, so the symlink checks run for real.
//!
//! Properties: no input panics; an accepted record names at least one path, each relative,
//! made only of plain components, none of them `.git` in any case, with no NUL, and never
//! through a symlink; its message has a non-empty subject on one line and no control
//! character but the body's newlines; a refusal is 65, 66 or 77.
#![no_main]

use elf_commit::job;
use elf_commit::message;
use elf_commit::paths;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn workdir() -> &'static Path {
    static WD: OnceLock<PathBuf> = OnceLock::new();
    WD.get_or_init(|| {
        let wd = std::env::temp_dir().join(format!("elf-fuzz-wt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&wd);
        std::fs::create_dir_all(wd.join("dir/sub")).expect("work tree");
        std::fs::write(wd.join("file.md"), "x").expect("file");
        let _ = std::os::unix::fs::symlink("/", wd.join("lnk"));
        let _ = std::os::unix::fs::symlink("..", wd.join("dir/up"));
        wd.canonicalize().expect("canonical")
    })
}

fuzz_target!(|data: &[u8]| {
    let wd = workdir();
    if let Ok(Some(rec)) = elf_core::record::parse_line(data) {
        for default in [None, Some("default message")] {
            match job::job_of(&rec, default, wd) {
                Ok(Some(j)) => {
                    assert!(!j.paths.is_empty());
                    j.paths.iter().for_each(|p| check_path(wd, p));
                    check_message(&j.message);
                }
                Ok(None) => {}
                Err(e) => assert!(matches!(e.code(), 65 | 66 | 77), "status {}", e.code()),
            }
        }
    }
    // The same bytes as a path named on the command line, from the work tree and below it.
    let p = Path::new(OsStr::from_bytes(data));
    for base in [wd.to_path_buf(), wd.join("dir/sub")] {
        match paths::relative(wd, &base, p) {
            Ok(rel) => check_path(wd, &rel),
            Err(e) => assert!(matches!(e.code(), 65 | 77), "status {}", e.code()),
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(m) = message::Message::parse(text) {
            check_message(&m);
        }
        if let Some((_, offset)) = message::parse_date(text) {
            assert!(offset.abs() <= 14 * 60 + 59, "offset {offset}");
        }
    }
});

fn check_path(wd: &Path, rel: &Path) {
    assert!(!rel.as_os_str().is_empty());
    assert!(!rel.as_os_str().as_bytes().contains(&0));
    for c in rel.components() {
        match c {
            Component::Normal(name) => {
                assert!(
                    !name.eq_ignore_ascii_case(".git"),
                    "{} is in .git",
                    rel.display()
                );
            }
            other => panic!("{}: component {other:?}", rel.display()),
        }
    }
    // No folder on the way is a symlink.
    let mut at = wd.to_path_buf();
    let mut comps = rel.components().peekable();
    while let Some(c) = comps.next() {
        if comps.peek().is_none() {
            break;
        }
        at.push(c);
        let is_link = std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink());
        assert!(
            !is_link,
            "{} goes through the symlink {}",
            rel.display(),
            at.display()
        );
    }
}

fn check_message(m: &message::Message) {
    assert!(!m.subject.is_empty());
    assert!(
        !m.subject.chars().any(char::is_control),
        "subject {:?}",
        m.subject
    );
    assert_eq!(m.subject.trim(), m.subject);
    assert!(
        !m.body.chars().any(|c| c.is_control() && c != '\n'),
        "body {:?}",
        m.body
    );
    let text = m.text();
    assert!(text.ends_with('\n') && !text.ends_with("\n\n\n"));
    assert_eq!(text.lines().next(), Some(m.subject.as_str()));
}

//! Driving the ELF scripts of bin-wrappers/ on a home: shared by the wrapper tests and the
//! stress tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub use crate::util::ok;
use crate::util::{cmd, json_lines};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder holding the five binaries.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_elf-db"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// A command for a wrapper script, with the tools first on PATH, the home set, and a git
/// identity that does not depend on the machine.
pub fn script(name: &str, home: &Path) -> Command {
    let mut c = cmd(root().join("bin-wrappers").join(name));
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    c.env("PATH", path)
        .env("ELF_HOME", home)
        .env("HOME", home.parent().unwrap_or(home))
        .env("GIT_AUTHOR_NAME", "ELF Test")
        .env("GIT_AUTHOR_EMAIL", "elf@example.com")
        .env("GIT_COMMITTER_NAME", "ELF Test")
        .env("GIT_COMMITTER_EMAIL", "elf@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    for v in [
        "FAILURE_TITLE",
        "FAILURE_DOMAIN",
        "FAILURE_SEVERITY",
        "FAILURE_TAGS",
        "FAILURE_SUMMARY",
        "HEURISTIC_DOMAIN",
        "HEURISTIC_RULE",
        "HEURISTIC_EXPLANATION",
        "HEURISTIC_SOURCE",
        "HEURISTIC_CONFIDENCE",
        "EXPERIMENT_NAME",
        "EXPERIMENT_HYPOTHESIS",
        "EXPERIMENT_SUCCESS_CRITERIA",
        "EXPERIMENT_FAILURE_CRITERIA",
    ] {
        c.env_remove(v);
    }
    c
}

/// `elf-db COMMAND --db HOME/memory/index.db`, more arguments to add.
pub fn elf_db(home: &Path, command: &str) -> Command {
    let mut c = cmd(env!("CARGO_BIN_EXE_elf-db"));
    c.args([command, "--db"]).arg(home.join("memory/index.db"));
    c
}

pub fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run script")
}

/// Rows of a query on the home's database, through elf-db itself.
pub fn rows(home: &Path, sql: &str) -> Vec<serde_json::Map<String, Value>> {
    let out = cmd(env!("CARGO_BIN_EXE_elf-db"))
        .args(["query", "--db"])
        .arg(home.join("memory/index.db"))
        .arg(sql)
        .output()
        .expect("elf-db query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out.stdout)
}

pub fn git(home: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(home)
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The subjects of the home's commits, newest first.
pub fn subjects(home: &Path) -> Vec<String> {
    git(home, &["log", "--format=%s"])
        .lines()
        .map(String::from)
        .collect()
}

/// `elf-db check` passes on the home's database.
pub fn assert_db_ok(home: &Path) {
    let out = cmd(env!("CARGO_BIN_EXE_elf-db"))
        .args(["check", "--db"])
        .arg(home.join("memory/index.db"))
        .output()
        .expect("elf-db check");
    assert!(
        out.status.success(),
        "elf-db check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `git fsck --strict` passes on the home.
pub fn assert_git_ok(home: &Path) {
    let out = Command::new("git")
        .arg("-C")
        .arg(home)
        .args(["fsck", "--strict"])
        .output()
        .expect("git fsck");
    assert!(
        out.status.success(),
        "git fsck: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The home was started by exactly one commit ("Start the ELF home"); returns every subject.
pub fn assert_started_once(home: &Path) -> Vec<String> {
    let subjects = subjects(home);
    assert_eq!(
        subjects
            .iter()
            .filter(|s| *s == "Start the ELF home")
            .count(),
        1,
        "{subjects:?}"
    );
    subjects
}

/// [`assert_started_once`], and git status is clean.
pub fn assert_started_once_and_clean(home: &Path) {
    assert_started_once(home);
    assert_eq!(git(home, &["status", "--porcelain"]), "");
}

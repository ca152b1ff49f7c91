//! Driving the ELF scripts of bin-wrappers/ on a home: shared by the wrapper tests and the
//! stress tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

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

pub fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run script")
}

pub fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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

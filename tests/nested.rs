//! Nested locks: the ELF scripts run inside `elf-lock HOME/.git/claude-lock --`, the lock their
//! commits take, as the legacy interop suggests. The enclosing elf-lock passes its lock down
//! (ELF_LOCK_HELD), so the commit inside counts it as held instead of waiting on it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::elf_home::{assert_git_ok, git, ok, rows, run, script, subjects};
use crate::util::{TempDir, watchdog};

const LOCK: &str = env!("CARGO_BIN_EXE_elf-lock");

/// `elf-lock ARGS LOCK -- <the script command c>`, with c's environment.
fn under_lock(c: &Command, args: &[&str], lock: &Path) -> Command {
    let mut l = Command::new(LOCK);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => l.env(k, v),
            None => l.env_remove(k),
        };
    }
    l.args(args)
        .arg(lock)
        .arg("--")
        .arg(c.get_program())
        .args(c.get_args());
    l
}

#[test]
fn the_scripts_record_under_the_lock_their_commits_take() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "init", "--domain", "d"]);
    ok(&run(c));
    let lock = home.join(".git/claude-lock");
    let mut failure = script("record-failure.sh", &home);
    failure.args(["--title", "Nested", "--domain", "d", "--summary", "s"]);
    let mut heuristic = script("record-heuristic.sh", &home);
    heuristic.args([
        "--domain",
        "d",
        "--rule",
        "r",
        "--explanation",
        "e",
        "--source",
        "s",
        "--confidence",
        "0.5",
    ]);
    let mut experiment = script("start-experiment.sh", &home);
    experiment.args(["--name", "Nested run", "--hypothesis", "h"]);
    let fix = {
        let mut c = script("sync-db-markdown.sh", &home);
        c.arg("--fix");
        c
    };
    for (name, c) in [
        ("record-failure.sh", failure),
        ("record-heuristic.sh", heuristic),
        ("start-experiment.sh", experiment),
        ("sync-db-markdown.sh --fix", fix),
    ] {
        let before = git(&home, &["rev-list", "--count", "HEAD"]);
        // The scripts' lock timeout is short, so a wait on the enclosing lock would fail.
        let mut l = under_lock(&c, &[], &lock);
        l.env("ELF_LOCK_TIMEOUT", "2");
        let out = watchdog(Duration::from_secs(60), move || run(l));
        ok(&out);
        assert_eq!(
            String::from_utf8_lossy(&out.stderr)
                .matches("claude-lock")
                .count(),
            0,
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name != "sync-db-markdown.sh --fix" {
            assert_ne!(
                git(&home, &["rev-list", "--count", "HEAD"]),
                before,
                "{name} committed nothing"
            );
        }
    }
    assert_git_ok(&home);
    assert_eq!(git(&home, &["status", "--porcelain"]).trim(), "");
    assert_eq!(rows(&home, "SELECT id FROM learnings").len(), 2);
    assert_eq!(rows(&home, "SELECT id FROM heuristics").len(), 1);
    assert_eq!(rows(&home, "SELECT id FROM experiments").len(), 1);
    let s = subjects(&home);
    assert!(s.iter().any(|l| l.contains("Nested")), "{s:?}");
}

#[test]
fn a_script_under_a_lock_it_was_not_passed_waits_for_nobody() {
    // Under `elf-lock -o`, the command does not hold the lock, so the lock is not passed down:
    // the script's commit is refused at once (status 75, saying who holds the lock) instead
    // of waiting out its timeout on its own ancestor. The record itself is kept.
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "init", "--domain", "d"]);
    ok(&run(c));
    let mut failure = script("record-failure.sh", &home);
    failure.args(["--title", "Not passed", "--domain", "d"]);
    let mut l = under_lock(&failure, &["-o"], &home.join(".git/claude-lock"));
    // A timeout the test would notice: without the check the commit waits it out.
    l.env("ELF_LOCK_TIMEOUT", "600");
    let out = watchdog(Duration::from_secs(120), move || run(l));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("an ancestor of this process, not passed down (ELF_LOCK_HELD)"),
        "status {:?}: {err}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(!err.contains("waited 600s"), "{err}");
}

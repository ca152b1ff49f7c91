//! One ELF home shared by several machines through a git remote (ELF_REMOTE, elf-commit
//! --push): real remotes on this machine (a bare repository over file://, and one served by
//! `git daemon` on 127.0.0.1), clones as machines.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::elf_home::{assert_git_ok, git, ok, rows, run, script};
use crate::util::{TempDir, wait_for};

/// A shared remote and the machines' homes.
pub struct Shared {
    pub dir: TempDir,
    pub url: String,
    pub machines: Vec<PathBuf>,
    daemon: Option<Child>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn sh_git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bare remote (served by `git daemon` when `daemon`) and `n` machines, each an empty
/// repository with the remote as `origin`.
pub fn shared(n: usize, daemon: bool) -> Shared {
    let dir = TempDir::new();
    let bare = dir.join("remote.git");
    sh_git(dir.path(), &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    let mut child = None;
    let url = if daemon {
        sh_git(&bare, &["config", "daemon.receivepack", "true"]);
        std::fs::write(bare.join("git-daemon-export-ok"), "").expect("export-ok");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.path().display()))
            .arg("--enable=receive-pack")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        child = Some(d);
        wait_for(Duration::from_secs(20), "git daemon to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        format!("git://127.0.0.1:{port}/remote.git")
    } else {
        format!("file://{}", bare.display())
    };
    let mut machines = Vec::new();
    for i in 0..n {
        let home = dir.join(format!("machine{}", i + 1));
        std::fs::create_dir_all(&home).expect("home");
        sh_git(&home, &["init", "-q", "-b", "main"]);
        sh_git(&home, &["remote", "add", "origin", &url]);
        machines.push(home);
    }
    Shared {
        dir,
        url,
        machines,
        daemon: child,
    }
}

impl Shared {
    pub fn bare(&self) -> PathBuf {
        self.dir.join("remote.git")
    }
}

/// A script on a machine of a shared home.
pub fn on(name: &str, home: &Path) -> Command {
    let mut c = script(name, home);
    c.env("ELF_REMOTE", "origin").env("ELF_LOCK_TIMEOUT", "60");
    c
}

pub fn heuristic(home: &Path, domain: &str, rule: &str) -> Output {
    let mut c = on("record-heuristic.sh", home);
    c.args(["--domain", domain, "--rule", rule, "--explanation", "why"]);
    run(c)
}

pub fn failure(home: &Path, title: &str) -> Output {
    let mut c = on("record-failure.sh", home);
    c.args(["--title", title, "--domain", "shared", "--summary", "what"]);
    run(c)
}

/// The final sync of a machine: sync-db-markdown.sh --fix with ELF_REMOTE.
pub fn sync_fix(home: &Path) -> Output {
    let mut c = on("sync-db-markdown.sh", home);
    c.arg("--fix");
    run(c)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A file of the remote's branch head.
pub fn remote_file(s: &Shared, path: &str) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(s.bare())
        .args(["show", &format!("main:{path}")])
        .output()
        .expect("git show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `## H-<id>: rule` heading of the remote's heuristics files.
pub fn remote_entries(s: &Shared) -> Vec<(u64, String)> {
    let list = git(&s.bare(), &["ls-tree", "--name-only", "main", "memory/heuristics/"]);
    let mut out = Vec::new();
    for path in list.lines() {
        for line in remote_file(s, path).lines() {
            if let Some((id, rule)) = line
                .strip_prefix("## H-")
                .and_then(|l| l.split_once(": "))
            {
                out.push((id.parse().expect("id"), rule.to_string()));
            }
        }
    }
    out
}

/// Every machine, synced twice round (so each has seen everyone's last push), is clean: its
/// index holds every remote entry under its id and every remote failure file, sync reports
/// nothing, git status and fsck are clean, and it is where the remote is.
pub fn assert_converged(s: &Shared) {
    for _ in 0..2 {
        for m in &s.machines {
            let o = sync_fix(m);
            ok(&o);
        }
    }
    let entries = remote_entries(s);
    let ids: BTreeSet<u64> = entries.iter().map(|e| e.0).collect();
    assert_eq!(ids.len(), entries.len(), "an H-<id> twice: {entries:?}");
    let files: BTreeSet<String> = git(&s.bare(), &["ls-tree", "--name-only", "main", "memory/failures/"])
        .lines()
        .map(String::from)
        .collect();
    let remote_head = git(&s.bare(), &["rev-parse", "main"]);
    for m in &s.machines {
        let o = run(on("sync-db-markdown.sh", m));
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        assert_eq!(git(m, &["rev-parse", "HEAD"]), remote_head, "{}", m.display());
        assert_eq!(git(m, &["status", "--porcelain"]), "");
        assert_git_ok(m);
        let hrows: BTreeMap<u64, String> = rows(m, "SELECT id, rule FROM heuristics")
            .into_iter()
            .map(|r| (r["id"].as_u64().expect("id"), r["rule"].as_str().unwrap_or("").to_string()))
            .collect();
        for (id, rule) in &entries {
            assert_eq!(hrows.get(id), Some(rule), "{}: H-{id}", m.display());
        }
        assert_eq!(hrows.len(), entries.len(), "{}", m.display());
        let frows: BTreeSet<String> = rows(m, "SELECT filepath FROM learnings WHERE type = 'failure'")
            .into_iter()
            .map(|r| r["filepath"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(frows, files, "{}", m.display());
    }
    assert_git_ok(&s.bare());
}

fn id_of(o: &Output) -> u64 {
    let text = stdout(o);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ID: H-"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no id in {text}"))
}

#[test]
fn appends_from_two_machines_both_survive_with_unique_ids() {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    let oa = heuristic(a, "shared", "rule from a");
    ok(&oa);
    // b's own index gives 1 too; its push is rejected, its entry renumbered above the remote's.
    let ob = heuristic(b, "shared", "rule from b");
    ok(&ob);
    assert_eq!(id_of(&oa), 1);
    assert_eq!(id_of(&ob), 2, "{}", stdout(&ob));
    let text = remote_file(&s, "memory/heuristics/shared.md");
    assert!(!text.contains("<<<<<<<") && !text.contains(">>>>>>>"), "{text}");
    assert_eq!(
        remote_entries(&s),
        vec![(1, "rule from a".to_string()), (2, "rule from b".to_string())]
    );
    // b's row moved with its heading.
    let r = rows(b, "SELECT id FROM heuristics WHERE rule = 'rule from b'");
    assert_eq!(r[0]["id"].as_u64(), Some(2));
    assert_converged(&s);
}

#[test]
fn a_failure_title_taken_on_the_remote_takes_name_2_and_its_row_follows() {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&failure(a, "Disk full"));
    let ob = failure(b, "Disk full");
    ok(&ob);
    let path = stdout(&ob)
        .lines()
        .find_map(|l| l.trim().strip_prefix("File: ").map(String::from))
        .expect("File:");
    assert!(path.ends_with("_disk-full-2.md"), "{path}");
    let r = rows(b, "SELECT filepath FROM learnings WHERE type = 'failure'");
    assert_eq!(r[0]["filepath"].as_str(), Some(path.as_str()));
    assert_converged(&s);
}

#[test]
fn the_same_remote_served_by_git_daemon() {
    let s = shared(2, true);
    assert!(s.url.starts_with("git://127.0.0.1:"));
    for i in 0..2 {
        for m in &s.machines {
            ok(&heuristic(m, "net", &format!("rule {i} of {}", m.display())));
            ok(&failure(m, &format!("fail {i}")));
        }
    }
    assert_eq!(remote_entries(&s).len(), 4);
    assert_converged(&s);
}

fn commit_by_hand(home: &Path, path: &str, text: &str) {
    std::fs::write(home.join(path), text).expect("write");
    sh_git(home, &["add", path]);
    sh_git(
        home,
        &["-c", "user.name=U", "-c", "user.email=u@x", "commit", "-q", "-m", "hand edit"],
    );
}

fn push_sync(home: &Path) -> Output {
    let mut c = crate::util::cmd(env!("CARGO_BIN_EXE_elf-commit"));
    c.arg("--repo")
        .arg(home)
        .args(["--push", "origin", "--sync", "--push-timeout", "20s"])
        .env("GIT_CONFIG_NOSYSTEM", "1");
    c.stdin(Stdio::null()).output().expect("elf-commit")
}

#[test]
fn a_hand_edit_of_the_same_file_on_two_machines_is_refused_naming_it() {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&heuristic(a, "shared", "first"));
    ok(&heuristic(b, "other", "b's own"));
    ok(&push_sync(a));
    let path = "memory/heuristics/shared.md";
    let base = std::fs::read_to_string(a.join(path)).expect("read");
    commit_by_hand(a, path, &base.replace("first", "first, edited on a"));
    ok(&push_sync(a));
    commit_by_hand(b, path, &base.replace("first", "first, edited on b"));
    let before = git(b, &["rev-parse", "HEAD"]);
    let remote_before = git(&s.bare(), &["rev-parse", "main"]);
    let o = push_sync(b);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    let line = stderr(&o);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("refused") && line.contains(path), "{line}");
    assert_eq!(git(b, &["rev-parse", "HEAD"]), before);
    assert_eq!(git(&s.bare(), &["rev-parse", "main"]), remote_before);
    assert!(std::fs::read_to_string(b.join(path)).expect("read").contains("edited on b"));
    // A record on b is still recorded, with the same warning.
    let o = heuristic(b, "other", "kept here");
    ok(&o);
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
}

#[test]
fn an_unreachable_remote_keeps_the_records_and_the_next_run_pushes_them() {
    let s = shared(1, false);
    let a = &s.machines[0];
    ok(&heuristic(a, "d", "before"));
    let away = s.dir.join("away.git");
    std::fs::rename(s.bare(), &away).expect("take the remote away");
    let o = heuristic(a, "d", "while away");
    ok(&o);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("warning: not pushed to origin"), "{err}");
    assert!(git(a, &["log", "--format=%s"]).contains("heuristic: while away"));
    std::fs::rename(&away, s.bare()).expect("bring it back");
    let o = failure(a, "after");
    ok(&o);
    assert_eq!(stderr(&o), "");
    let log = git(&s.bare(), &["log", "--format=%s", "main"]);
    assert!(log.contains("heuristic: while away") && log.contains("failure: after"), "{log}");
    assert_converged(&s);
}

#[test]
fn a_rewritten_remote_history_is_refused_and_the_records_kept() {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&heuristic(a, "d", "one"));
    ok(&heuristic(a, "d", "two"));
    // Someone force-pushes the remote back by one commit.
    sh_git(b, &["fetch", "-q", "origin"]);
    sh_git(b, &["push", "-q", "--force", "origin", "origin/main~1:refs/heads/main"]);
    let forced = git(&s.bare(), &["rev-parse", "main"]);
    let o = heuristic(a, "d", "three");
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("rewritten"), "{err}");
    assert_eq!(git(&s.bare(), &["rev-parse", "main"]), forced);
    assert!(git(a, &["log", "--format=%s"]).contains("heuristic: three"));
    let o = push_sync(a);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
}

/// Records on two machines, one of them crashing (SIGKILL) at `stage` of its push; the next
/// run finishes: every record exactly once on the remote, ids unique, indexes complete.
fn crash_at(stage: &str) {
    let s = shared(2, false);
    let (a, b) = (&s.machines[0], &s.machines[1]);
    ok(&heuristic(a, "d", "a one"));
    ok(&failure(a, "same"));
    let mut c = on("record-heuristic.sh", b);
    c.args(["--domain", "d", "--rule", "b one", "--explanation", "x"])
        .env("ELF_COMMIT_CRASH", stage);
    let o = run(c);
    assert_ne!(o.status.code(), None);
    let mut c = on("record-failure.sh", b);
    c.args(["--title", "same", "--domain", "d", "--summary", "x"]);
    ok(&run(c));
    assert_converged(&s);
    let log = git(&s.bare(), &["log", "--format=%s", "main"]);
    for subject in ["heuristic: a one", "heuristic: b one", "failure: same"] {
        let n = log.lines().filter(|l| *l == subject).count();
        let want = if subject == "failure: same" { 2 } else { 1 };
        assert_eq!(n, want, "{subject} in {log}");
    }
    let rules: Vec<String> = remote_entries(&s).into_iter().map(|e| e.1).collect();
    assert_eq!(rules, ["a one", "b one"]);
}

#[test]
fn kill_9_after_the_fetch_is_finished_by_the_next_run() {
    crash_at("fetched");
}

#[test]
fn kill_9_after_the_rows_moved_is_finished_by_the_next_run() {
    crash_at("renumbered");
}

#[test]
fn kill_9_while_the_files_move_is_finished_by_the_next_run() {
    crash_at("files");
}

#[test]
fn kill_9_after_the_remote_took_the_push_pushes_nothing_twice() {
    crash_at("pushed");
}

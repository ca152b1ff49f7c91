//! Machines sharing an ELF home through a real git remote on this machine: a bare repository
//! over file://, or one served by `git daemon` on 127.0.0.1 (started and stopped here), and
//! a repository per machine with the remote as origin. Shared by tests/remote.rs and the
//! stress test.

#![allow(dead_code)]

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

pub fn sh_git(dir: &Path, args: &[&str]) {
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
    sh_git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
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
    let list = git(
        &s.bare(),
        &["ls-tree", "--name-only", "main", "memory/heuristics/"],
    );
    let mut out = Vec::new();
    for path in list.lines() {
        for line in remote_file(s, path).lines() {
            if let Some((id, rule)) = line.strip_prefix("## H-").and_then(|l| l.split_once(": ")) {
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
    let files: BTreeSet<String> = git(
        &s.bare(),
        &["ls-tree", "--name-only", "main", "memory/failures/"],
    )
    .lines()
    .map(String::from)
    .collect();
    let remote_head = git(&s.bare(), &["rev-parse", "main"]);
    for m in &s.machines {
        let o = run(on("sync-db-markdown.sh", m));
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        assert_eq!(
            git(m, &["rev-parse", "HEAD"]),
            remote_head,
            "{}",
            m.display()
        );
        // Nothing is left to import, and the next import starts from a commit of this history
        // (it reads only what comes after it).
        assert!(
            !m.join(".git/elf-import-pending").exists(),
            "{}",
            m.display()
        );
        let imported = std::fs::read_to_string(m.join(".git/elf-imported")).unwrap_or_default();
        git(m, &["merge-base", "--is-ancestor", imported.trim(), "HEAD"]);
        assert_eq!(git(m, &["status", "--porcelain"]), "");
        assert_git_ok(m);
        let hrows: BTreeMap<u64, String> = rows(m, "SELECT id, rule FROM heuristics")
            .into_iter()
            .map(|r| {
                (
                    r["id"].as_u64().expect("id"),
                    r["rule"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        for (id, rule) in &entries {
            assert_eq!(hrows.get(id), Some(rule), "{}: H-{id}", m.display());
        }
        assert_eq!(hrows.len(), entries.len(), "{}", m.display());
        let frows: BTreeSet<String> =
            rows(m, "SELECT filepath FROM learnings WHERE type = 'failure'")
                .into_iter()
                .map(|r| r["filepath"].as_str().unwrap_or("").to_string())
                .collect();
        assert_eq!(frows, files, "{}", m.display());
    }
    assert_git_ok(&s.bare());
}

//! elf-commit: exactly the named paths, under any concurrency, with git itself beside it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{TempDir, cmd, json_lines, one_line, pipeline, run_with_input, scale, watchdog};

const BIN: &str = env!("CARGO_BIN_EXE_elf-commit");
const WRITE_BIN: &str = env!("CARGO_BIN_EXE_elf-write");

/// A repository in a temporary folder, with an identity and no global configuration.
struct Repo {
    dir: TempDir,
    root: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        Repo::init(&[])
    }

    /// A repository made by `git init` with `args` too.
    fn init(args: &[&str]) -> Repo {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.join("home")).expect("home");
        let root = dir.join("repo");
        std::fs::create_dir_all(&root).expect("repo");
        let r = Repo { dir, root };
        let mut all = vec!["init", "-q", "-b", "main"];
        all.extend_from_slice(args);
        all.push(".");
        r.git(&all);
        r.git(&["config", "user.name", "Test User"]);
        r.git(&["config", "user.email", "test@example.com"]);
        r
    }

    fn path(&self) -> &Path {
        &self.root
    }

    fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.root.join(p)
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    fn env(&self, c: &mut Command) {
        c.current_dir(self.path())
            .env("HOME", self.home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_AUTHOR_NAME")
            .env_remove("GIT_AUTHOR_EMAIL")
            .env_remove("GIT_AUTHOR_DATE")
            .env_remove("GIT_COMMITTER_NAME")
            .env_remove("GIT_COMMITTER_EMAIL")
            .env_remove("GIT_COMMITTER_DATE")
            .env_remove("EMAIL");
    }

    /// An elf-commit command run in the repository.
    fn elf(&self, args: &[&str]) -> Command {
        let mut c = cmd(BIN);
        self.env(&mut c);
        c.args(args);
        c
    }

    fn git_cmd(&self, args: &[&str]) -> Command {
        let mut c = cmd("git");
        self.env(&mut c);
        c.args(args);
        c
    }

    /// Runs git and returns its stdout, failing the test if it fails.
    fn git(&self, args: &[&str]) -> String {
        let out = self.git_cmd(args).output().expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, content).expect("write file");
    }

    /// Runs elf-commit with `args` on `values` read from a file, so that every record is
    /// already waiting when it starts.
    fn elf_waiting(&self, args: &[&str], values: &[Value]) -> Output {
        let input = self.join(".git/test-input.jsonl");
        std::fs::write(&input, records(values)).expect("input");
        self.elf(args)
            .stdin(std::fs::File::open(&input).expect("open"))
            .output()
            .expect("run")
    }

    /// An elf-write command writing into the work tree.
    fn elf_write_cmd(&self) -> Command {
        let mut c = cmd(WRITE_BIN);
        self.env(&mut c);
        c.arg("--root").arg(self.path());
        c
    }

    /// Runs elf-write on `values` and returns the records it passed on.
    fn elf_write(&self, values: &[Value]) -> Vec<Value> {
        let out = run_with_input(self.elf_write_cmd(), &records(values));
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        json_lines(&out.stdout)
            .into_iter()
            .map(Value::Object)
            .collect()
    }

    /// The lines `git diff ARGS` adds and removes (`+x`, `-y`), without the file headers.
    fn diff_lines(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["diff", "--no-color", "--format="];
        all.extend_from_slice(args);
        self.git(&all)
            .lines()
            .filter(|l| {
                (l.starts_with('+') || l.starts_with('-'))
                    && !l.starts_with("+++")
                    && !l.starts_with("---")
            })
            .map(str::to_string)
            .collect()
    }

    /// Writes `rel` and commits it with the git CLI.
    fn git_commit_file(&self, rel: &str, content: &str, message: &str) {
        self.write(rel, content);
        self.git(&["add", rel]);
        self.git(&["commit", "-q", "-m", message]);
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    fn count(&self) -> usize {
        self.git(&["rev-list", "--count", "HEAD"])
            .trim()
            .parse()
            .expect("count")
    }

    fn tree_files(&self) -> Vec<String> {
        self.git(&["ls-tree", "-r", "--name-only", "HEAD"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn status(&self) -> Vec<String> {
        self.git(&["status", "--porcelain"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn subject_and_body(&self, rev: &str) -> (String, String) {
        let s = self
            .git(&["log", "-1", "--format=%s", rev])
            .trim_end()
            .to_string();
        let b = self
            .git(&["log", "-1", "--format=%b", rev])
            .trim_end()
            .to_string();
        (s, b)
    }

    /// `git fsck --strict` succeeds and reports nothing but dangling objects.
    fn assert_fsck(&self) {
        let out = self
            .git_cmd(&["fsck", "--strict", "--no-dangling"])
            .output()
            .expect("fsck");
        assert!(
            out.status.success(),
            "fsck: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "fsck output");
    }

    /// Every commit has at most one parent, and the history has `n` commits.
    fn assert_linear(&self, n: usize) {
        assert_eq!(self.count(), n);
        assert_eq!(
            self.git(&["rev-list", "--min-parents=2", "HEAD"]),
            "",
            "merge commits"
        );
    }

    /// `index.lock`, or any file of elf-commit's other than its lock files, left in `.git`.
    fn lock_left(&self) -> bool {
        let litter: Vec<String> = std::fs::read_dir(self.join(".git"))
            .expect("read .git")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| {
                n == "index.lock"
                    || (n.starts_with("elf-commit")
                        && !n.ends_with("elf-commit.lock")
                        && n != "elf-commit-stale.lock")
            })
            .collect();
        !litter.is_empty()
    }
}

fn records(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        serde_json::to_writer(&mut out, v).expect("json");
        out.push(b'\n');
    }
    out
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha_of(rec: &serde_json::Map<String, Value>) -> String {
    rec["commit"]["sha"]
        .as_str()
        .expect("commit.sha is a string")
        .to_string()
}

#[test]
fn commits_only_the_named_paths_and_leaves_the_users_index_alone() {
    let r = Repo::new();
    r.git_commit_file("base.txt", "base\n", "base");
    // The user's work in progress: a staged new file, a staged change, an unstaged change.
    r.write("staged.txt", "staged\n");
    r.write("base.txt", "base, staged edit\n");
    r.git(&["add", "staged.txt", "base.txt"]);
    r.write("base.txt", "base, staged edit, then unstaged edit\n");
    r.write("memory/failures/x.md", "# x\n");

    let input = records(&[
        json!({"key":"k1","write":{"path":"memory/failures/x.md","bytes":4,"created":true},
        "commit":{"message":"failure: x"}}),
    ]);
    let out = run_with_input(r.elf(&[]), &input);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 1);
    assert_eq!(sha_of(&recs[0]), r.head());
    assert_eq!(recs[0]["key"], "k1");
    assert_eq!(recs[0]["commit"]["message"], "failure: x");
    assert!(recs[0]["commit"].get("unchanged").is_none());

    assert_eq!(
        r.git(&["show", "--name-only", "--format=", "HEAD"]).trim(),
        "memory/failures/x.md"
    );
    assert_eq!(r.tree_files(), ["base.txt", "memory/failures/x.md"]);
    // Still staged, still unstaged, exactly as before; the committed path is clean.
    assert_eq!(r.status(), ["MM base.txt", "A  staged.txt"]);
    assert_eq!(r.git(&["show", ":base.txt"]), "base, staged edit\n");
    assert_eq!(
        std::fs::read_to_string(r.join("base.txt")).ok().as_deref(),
        Some("base, staged edit, then unstaged edit\n")
    );
    assert!(!r.lock_left());
    r.assert_fsck();
}

#[test]
fn direct_form_prints_the_commit_and_handles_changes_deletions_and_folders() {
    let r = Repo::new();
    r.write("a.txt", "a\n");
    r.write("dir/one.txt", "1\n");
    r.write("dir/sub/two.txt", "2\n");
    let out = r
        .elf(&["-m", "first", "--", "a.txt", "dir"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r.head());
    assert_eq!(r.tree_files(), ["a.txt", "dir/one.txt", "dir/sub/two.txt"]);
    assert_eq!(
        r.git(&["log", "-1", "--format=%an <%ae>"]).trim(),
        "Test User <test@example.com>"
    );

    std::fs::remove_file(r.join("a.txt")).expect("rm");
    std::fs::remove_dir_all(r.join("dir/sub")).expect("rm");
    r.write("dir/one.txt", "one\n");
    let out = r
        .elf(&["-m", "second", "--", "a.txt", "dir"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r.tree_files(), ["dir/one.txt"]);
    assert_eq!(r.status(), Vec::<String>::new());
    assert_eq!(r.count(), 2);

    // Paths relative to the current directory without --repo, to the work tree with it.
    r.write("dir/three.txt", "3\n");
    let out = r
        .elf(&["-m", "third", "--", "three.txt"])
        .current_dir(r.join("dir"))
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    r.write("dir/four.txt", "4\n");
    let repo = r.path().to_str().expect("utf-8 path");
    let out = r
        .elf(&["--repo", repo, "-m", "fourth", "--", "dir/four.txt"])
        .current_dir("/")
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        r.tree_files(),
        ["dir/four.txt", "dir/one.txt", "dir/three.txt"]
    );
    r.assert_fsck();
}

#[test]
fn replay_makes_no_second_commit_and_ignored_paths_are_skipped() {
    let r = Repo::new();
    r.write(".gitignore", "*.log\n");
    r.write("memory/a.md", "a\n");
    r.write("memory/debug.log", "noise\n");
    let input = records(&[
        json!({"commit":{"paths":["memory/a.md", ".gitignore"],"message":"first"}}),
        json!({"commit":{"paths":["memory/a.md"],"message":"replay"}}),
        json!({"commit":{"paths":["memory/debug.log"],"message":"ignored"}}),
    ]);
    let out = run_with_input(r.elf(&[]), &input);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 3);
    assert_eq!(r.count(), 1);
    let head = r.head();
    assert_eq!(sha_of(&recs[0]), head);
    assert!(recs[0]["commit"].get("unchanged").is_none());
    assert_eq!(sha_of(&recs[1]), head);
    assert_eq!(recs[1]["commit"]["unchanged"], true);
    assert_eq!(sha_of(&recs[2]), head);
    assert_eq!(recs[2]["commit"]["unchanged"], true);
    assert_eq!(
        recs[2]["commit"]["skipped"],
        "ignored by git: memory/debug.log"
    );
    assert_eq!(r.tree_files(), [".gitignore", "memory/a.md"]);

    // The same input again: nothing new at all.
    let again = run_with_input(r.elf(&[]), &input);
    assert_eq!(code(&again), Some(0), "{}", stderr(&again));
    assert!(
        json_lines(&again.stdout)
            .iter()
            .all(|rec| rec["commit"]["unchanged"] == true && sha_of(rec) == head)
    );
    assert_eq!(r.count(), 1);

    // --ignored error makes it a bad record, and nothing after it is attempted.
    let input = records(&[json!({"commit":{"paths":["memory/debug.log"],"message":"ignored"}})]);
    let out = run_with_input(r.elf(&["--ignored", "error"]), &input);
    assert_eq!(code(&out), Some(65));
    assert!(out.stdout.is_empty());
    assert!(
        one_line(&out.stderr).starts_with("elf-commit: line 1: memory/debug.log is ignored by git"),
        "{}",
        stderr(&out)
    );
    // A tracked file stays committable even when a pattern matches it.
    r.git(&["add", "-f", "memory/debug.log"]);
    r.git(&["commit", "-q", "-m", "track it"]);
    r.write("memory/debug.log", "more noise\n");
    let out = run_with_input(r.elf(&["--ignored", "error"]), &input);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r.count(), 3);
}

#[test]
fn messages_are_cleaned_and_a_newline_starts_the_body() {
    let r = Repo::new();
    r.write("a", "1\n");
    r.write("b", "2\n");
    let input = records(&[
        json!({"commit":{"paths":["a"],"message":"failure: \u{1b}[31mred\u{1b}[0m alert\u{7}\u{1b}]0;owned\u{7}"}}),
        json!({"commit":{"paths":["b"],"message":"failure: title\nInjected: [ERROR] fake log line\r\nDomain: x"}}),
    ]);
    let out = run_with_input(r.elf(&[]), &input);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        r.subject_and_body("HEAD~1"),
        ("failure: red alert".to_string(), String::new())
    );
    assert_eq!(
        r.subject_and_body("HEAD"),
        (
            "failure: title".to_string(),
            "Injected: [ERROR] fake log line\nDomain: x".to_string()
        )
    );
    // The record itself passes on as it came, with the result added.
    let recs = json_lines(&out.stdout);
    assert_eq!(
        recs[1]["commit"]["message"],
        "failure: title\nInjected: [ERROR] fake log line\r\nDomain: x"
    );
}

#[test]
fn batch_commits_waiting_records_together() {
    let r = Repo::new();
    let mut values = Vec::new();
    for i in 0..5 {
        r.write(&format!("f{i}.md"), &format!("{i}\n"));
        values.push(
            json!({"key": format!("k{i}"), "write":{"path": format!("f{i}.md")},
            "commit":{"message": format!("heuristic: rule {i}\nDomain: d{i}")}}),
        );
    }
    values.insert(
        2,
        json!({"key":"failed","error":{"tool":"elf-write","code":65,"message":"bad"}}),
    );
    values.insert(3, json!({"key":"nothing for git","db":{"id":7}}));
    let out = r.elf_waiting(&["--batch"], &values);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 7);
    assert_eq!(r.count(), 1);
    let head = r.head();
    let keys: Vec<&str> = recs
        .iter()
        .map(|rec| rec["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        ["k0", "k1", "failed", "nothing for git", "k2", "k3", "k4"]
    );
    for rec in recs.iter().filter(|rec| rec.contains_key("write")) {
        assert_eq!(sha_of(rec), head);
    }
    assert_eq!(Value::Object(recs[2].clone()), values[2]);
    assert_eq!(Value::Object(recs[3].clone()), values[3]);
    let (subject, body) = r.subject_and_body("HEAD");
    assert_eq!(subject, "heuristic: rule 0 and 4 more");
    for i in 0..5 {
        assert!(
            body.lines().any(|l| l == format!("heuristic: rule {i}")),
            "{body}"
        );
        assert!(body.lines().any(|l| l == format!("Domain: d{i}")), "{body}");
    }
    assert_eq!(r.tree_files().len(), 5);
    assert!(r.status().is_empty(), "{:?}", r.status());
}

#[test]
fn bad_records_stop_the_run_or_become_error_records() {
    let r = Repo::new();
    r.write("ok1", "1\n");
    r.write("ok2", "2\n");
    let input = [
        records(&[json!({"commit":{"paths":["ok1"],"message":"one"}})]),
        b"{not json\n".to_vec(),
        records(&[
            json!({"commit":{"paths":["../outside"],"message":"escape"}}),
            json!({"commit":{"paths":["missing"],"message":"missing"}}),
            json!({"commit":{"paths":["ok2"]}}),
            json!({"commit":{"paths":["ok2"],"message":"two"}}),
        ]),
    ]
    .concat();
    let out = run_with_input(r.elf(&[]), &input);
    assert_eq!(code(&out), Some(65));
    assert_eq!(
        json_lines(&out.stdout).len(),
        1,
        "the record before the bad line was passed on"
    );
    assert!(
        one_line(&out.stderr).starts_with("elf-commit: line 2: invalid JSON"),
        "{}",
        stderr(&out)
    );
    assert_eq!(r.count(), 1);

    let out = run_with_input(r.elf(&["--keep-going"]), &input);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    let codes: Vec<Value> = recs
        .iter()
        .map(|rec| rec.get("error").map_or(Value::Null, |e| e["code"].clone()))
        .collect();
    assert_eq!(
        codes,
        [
            Value::Null,
            json!(65),
            json!(65),
            json!(66),
            json!(65),
            Value::Null
        ]
    );
    assert_eq!(recs[2]["error"]["line"], 3);
    assert_eq!(recs[2]["commit"]["message"], "escape");
    assert_eq!(recs[0]["commit"]["unchanged"], true);
    assert_eq!(r.tree_files(), ["ok1", "ok2"]);
    assert_eq!(r.count(), 2);
}

#[test]
fn refused_paths_and_usage_errors() {
    let r = Repo::new();
    r.write("a", "a\n");
    std::os::unix::fs::symlink("/etc", r.join("etc-link")).expect("symlink");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["-m", "x", "--", "../x"], 65, "outside the work tree"),
        (
            &["-m", "x", "--", "/etc/passwd"],
            65,
            "outside the work tree",
        ),
        (&["-m", "x", "--", ".git/config"], 65, "inside .git"),
        (&["-m", "x", "--", "."], 65, "the work tree itself"),
        (&["-m", "x", "--", "etc-link/passwd"], 77, "symbolic link"),
        (&["-m", "x", "--", "nope"], 66, "does not exist"),
        (&["--", "a"], 64, "needs -m"),
        (&["-m", "\u{1b}[0m", "--", "a"], 64, "message is empty"),
        (&["--batch", "-m", "x", "--", "a"], 64, "record form only"),
        (&["-w", "soon", "-m", "x", "--", "a"], 64, "--timeout"),
    ];
    for (args, want, text) in cases {
        let out = r.elf(args).output().expect("run");
        assert_eq!(code(&out), Some(*want), "{args:?}: {}", stderr(&out));
        let line = one_line(&out.stderr);
        assert!(line.contains(text), "{args:?}: {line}");
    }
    assert_eq!(
        r.git_cmd(&["rev-parse", "-q", "--verify", "HEAD"])
            .output()
            .map(|o| o.status.success())
            .ok(),
        Some(false)
    );
}

#[test]
fn no_repository_without_init_and_a_new_one_with_it() {
    let dir = TempDir::new();
    let target = dir.join("home");
    let t = target.to_str().expect("utf-8");
    let out = cmd(BIN)
        .args(["--repo", t, "-m", "x", "--", "a"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(66), "{}", stderr(&out));
    assert!(one_line(&out.stderr).contains("--init"));
    std::fs::create_dir_all(&target).expect("mkdir");
    std::fs::write(target.join("a"), "a\n").expect("write");
    let out = cmd(BIN)
        .args(["--repo", t, "--init", "-m", "x", "--", "a"])
        .env("HOME", dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Env Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_AUTHOR_DATE", "@1700000000 +0100")
        .env("GIT_COMMITTER_NAME", "Env Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let show = cmd("git")
        .args([
            "-C",
            t,
            "log",
            "-1",
            "--format=%an <%ae> %at %ai|%cn <%ce>|%s",
        ])
        .env("HOME", dir.path())
        .output()
        .expect("git log");
    assert_eq!(
        String::from_utf8_lossy(&show.stdout).trim(),
        "Env Author <author@example.com> 1700000000 2023-11-14 23:13:20 +0100|Env Committer <committer@example.com>|x"
    );
    // No identity anywhere: a clear usage error, nothing committed.
    std::fs::write(target.join("b"), "b\n").expect("write");
    let out = cmd(BIN)
        .args(["--repo", t, "-m", "y", "--", "b"])
        .env("HOME", dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(64), "{}", stderr(&out));
    assert!(one_line(&out.stderr).contains("no author identity"));
}

/// A process holding `.git/index.lock` open, as a running git does.
fn hold_index_lock(r: &Repo) -> Child {
    let mut child = Command::new("sh")
        .args(["-c", "exec 3>.git/index.lock; echo ready; exec sleep 60"])
        .current_dir(r.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn holder");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("handshake");
    assert_eq!(line, "ready\n");
    child
}

#[test]
fn index_lock_held_by_a_live_process_waits_then_gives_up_with_75() {
    let r = Repo::new();
    r.write("a", "a\n");
    let mut holder = hold_index_lock(&r);
    let start = Instant::now();
    let out = r
        .elf(&["-w", "300ms", "-m", "x", "--", "a"])
        .output()
        .expect("run");
    let waited = start.elapsed();
    assert_eq!(code(&out), Some(75), "{}", stderr(&out));
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}"
    );
    let line = one_line(&out.stderr);
    assert!(
        line.contains(&format!(
            "{}/.git/index.lock exists (age ",
            r.path().display()
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("held open by sleep (pid {})", holder.id())),
        "{line}"
    );
    // Record form: the record is not passed on (it stays upstream), and the lock is untouched.
    let input = records(&[json!({"commit":{"paths":["a"],"message":"x"}})]);
    let out = run_with_input(r.elf(&["-w", "100ms"]), &input);
    assert_eq!(code(&out), Some(75));
    assert!(out.stdout.is_empty());
    assert!(r.lock_left());

    // Waiting, and going on once git is done.
    let waiting = r
        .elf(&["-w", "30s", "-m", "x", "--", "a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        r.git_cmd(&["rev-parse", "-q", "--verify", "HEAD"])
            .output()
            .is_ok_and(|o| !o.status.success())
    );
    let _ = holder.kill();
    let _ = holder.wait();
    std::fs::remove_file(r.join(".git/index.lock")).expect("release");
    let out = watchdog(Duration::from_secs(30), move || {
        waiting.wait_with_output().expect("wait")
    });
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r.count(), 1);
    assert!(!r.lock_left());
}

#[test]
fn stale_index_lock_is_removed_only_when_unused_and_old() {
    let r = Repo::new();
    r.write("a", "a\n");
    let lock = r.join(".git/index.lock");
    // Left behind by a dead git: young, so not yet.
    std::fs::write(&lock, b"").expect("lock");
    let out = r
        .elf(&["-w", "50ms", "-m", "x", "--", "a"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(75), "{}", stderr(&out));
    assert!(one_line(&out.stderr).contains(
        "no process on this machine has it open; it will be removed as stale once 10m0s old"
    ));
    // Old, but removal disabled.
    let touch = Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&lock)
        .status()
        .expect("touch");
    assert!(touch.success());
    let out = r
        .elf(&[
            "-w",
            "50ms",
            "--stale-index-lock",
            "0",
            "-m",
            "x",
            "--",
            "a",
        ])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(75), "{}", stderr(&out));
    assert!(one_line(&out.stderr).contains("stale removal is disabled"));
    // Old and unused: removed with a warning, and the commit made.
    let out = r
        .elf(&["-w", "50ms", "-m", "x", "--", "a"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with("elf-commit: warning: removed stale ") && line.contains("60m0s old"),
        "{line}"
    );
    assert_eq!(r.count(), 1);
    assert!(!r.lock_left());
    // Old but held open by a live process: never removed.
    let mut holder = hold_index_lock(&r);
    let touch = Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&lock)
        .status()
        .expect("touch");
    assert!(touch.success());
    r.write("a", "changed\n");
    let out = r
        .elf(&["-w", "50ms", "-m", "y", "--", "a"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(75), "{}", stderr(&out));
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(r.lock_left());
    std::fs::remove_file(&lock).expect("cleanup");
}

#[test]
fn twenty_processes_commit_their_own_files_at_once() {
    let r = Repo::new();
    let n = 20;
    for i in 0..n {
        r.write(&format!("f{i:02}.md"), &format!("file {i}\n"));
    }
    // The user has something staged meanwhile; it must stay out of every commit.
    r.write("user.txt", "mine\n");
    r.git(&["add", "user.txt"]);
    let children: Vec<Child> = (0..n)
        .map(|i| {
            let mut c = if i % 2 == 0 {
                r.elf(&["-m", &format!("file {i}"), "--", &format!("f{i:02}.md")])
            } else {
                r.elf(&["-w", "60s"])
            };
            c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = c.spawn().expect("spawn");
            let mut stdin = child.stdin.take().expect("stdin");
            if i % 2 == 1 {
                let rec = records(&[json!({"commit":{"paths":[format!("f{i:02}.md")],"message":format!("file {i}")}})]);
                stdin.write_all(&rec).expect("feed");
            }
            drop(stdin);
            child
        })
        .collect();
    let outs = watchdog(Duration::from_secs(120), move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait"))
            .collect::<Vec<_>>()
    });
    for out in &outs {
        assert_eq!(code(out), Some(0), "{}", stderr(out));
    }
    r.assert_linear(n);
    let mut want: Vec<String> = (0..n).map(|i| format!("f{i:02}.md")).collect();
    want.sort();
    assert_eq!(r.tree_files(), want);
    let subjects = r.git(&["log", "--format=%s"]);
    for i in 0..n {
        assert_eq!(
            subjects
                .lines()
                .filter(|s| *s == format!("file {i}"))
                .count(),
            1
        );
    }
    assert_eq!(r.status(), ["A  user.txt"]);
    assert!(!r.lock_left());
    r.assert_fsck();
}

#[test]
fn git_cli_committing_alongside_loses_nothing() {
    let r = Repo::new();
    r.git_commit_file("seed", "seed\n", "seed");
    let n = scale(8, 40);
    let path = r.path().to_path_buf();
    let home = r.home();
    let git_side = {
        let path = path.clone();
        std::thread::spawn(move || {
            let run = |args: &[&str]| -> bool {
                let mut c = cmd("git");
                c.current_dir(&path)
                    .env("HOME", &home)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .args(args);
                c.stdout(Stdio::null()).stderr(Stdio::null());
                c.status().is_ok_and(|s| s.success())
            };
            for i in 0..n {
                let name = format!("git{i}.txt");
                std::fs::write(path.join(&name), format!("{i}\n")).expect("write");
                // git refuses while index.lock is taken; a script would retry, so do we.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !run(&["add", &name]) {
                    assert!(Instant::now() < deadline, "git add never got the index");
                    std::thread::sleep(Duration::from_millis(2));
                }
                while !run(&["commit", "-q", "-m", &format!("git {i}")]) {
                    assert!(Instant::now() < deadline, "git commit never got the index");
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    let mut elf = r.elf(&["-w", "60s"]);
    elf.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = elf.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for i in 0..n {
        let name = format!("elf{i}.txt");
        std::fs::write(path.join(&name), format!("{i}\n")).expect("write");
        stdin
            .write_all(&records(&[
                json!({"commit":{"paths":[name],"message":format!("elf {i}")}}),
            ]))
            .expect("feed");
        stdin.flush().expect("flush");
        let line = lines.next().expect("one line per record").expect("read");
        assert!(line.contains("\"sha\""), "{line}");
    }
    drop(stdin);
    let status = watchdog(Duration::from_secs(120), move || {
        let s = child.wait().expect("wait");
        git_side.join().expect("git side");
        s
    });
    assert!(status.success());
    // Every commit of either side is in the (linear) history and holds its own file.
    r.assert_linear(1 + 2 * n);
    let log = r.git(&["log", "--format=%H %s"]);
    for i in 0..n {
        for (side, file) in [
            ("git", format!("git{i}.txt")),
            ("elf", format!("elf{i}.txt")),
        ] {
            let subject = format!("{side} {i}");
            let sha = log
                .lines()
                .find_map(|l| {
                    l.split_once(' ')
                        .filter(|(_, s)| *s == subject)
                        .map(|(h, _)| h.to_string())
                })
                .unwrap_or_else(|| panic!("lost commit {subject:?}: {log}"));
            assert_eq!(
                r.git(&["rev-parse", &format!("{sha}:{file}")]),
                r.git(&["hash-object", &file])
            );
        }
    }
    // Not asserted: that HEAD still holds every elf file. `git commit` reads the index before
    // it locks it (git 2.47, builtin/commit.c prepare_index), so an index update that lands in
    // that window is overwritten by git, and git's next commit then drops those files; two git
    // processes race the same way. See CAVEATS in the man page.
    r.assert_fsck();
}

#[test]
fn kill_9_at_any_instant_then_one_replay_gives_one_commit_per_record() {
    let r = Repo::new();
    let m = 30;
    let names: Vec<String> = (0..m).map(|i| format!("memory/r{i:02}.md")).collect();
    for (i, name) in names.iter().enumerate() {
        r.write(name, &format!("record {i}\n"));
    }
    let input = records(
        &names
            .iter()
            .map(|n| json!({"key": n, "commit":{"paths":[n],"message":format!("add {n}")}}))
            .collect::<Vec<_>>(),
    );
    let rounds = scale(4, 25);
    for round in 0..rounds {
        let mut c = r.elf(&[]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = input.clone();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        // Wait for the first record to come out, then kill at a varying moment.
        let mut first = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first);
        std::thread::sleep(Duration::from_micros(300 * round as u64));
        let _ = child.kill();
        let _ = child.wait();
    }
    // One recovery run of every record.
    let out = watchdog(Duration::from_secs(60), {
        let c = r.elf(&["-w", "30s"]);
        let input = input.clone();
        move || run_with_input(c, &input)
    });
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), m);
    // Each record names a commit of the history that holds its file as it is now.
    for (rec, name) in recs.iter().zip(&names) {
        let at_sha = r.git(&["rev-parse", &format!("{}:{name}", sha_of(rec))]);
        assert_eq!(at_sha, r.git(&["rev-parse", &format!("HEAD:{name}")]));
    }
    r.assert_linear(m);
    assert_eq!(r.tree_files(), names);
    assert_eq!(r.status(), Vec::<String>::new());
    assert!(!r.lock_left());
    r.assert_fsck();
}

#[test]
fn lock_file_is_flocked_and_symlinks_are_refused() {
    let r = Repo::new();
    r.write("a", "a\n");
    let lock = r.join("claude-lock");
    // Held by someone else: 75 after the timeout.
    let held = std::fs::File::create(&lock).expect("lock file");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
    // SAFETY: flock(2) on a descriptor this test owns.
    let locked = unsafe { libc::flock(fd, libc::LOCK_EX) };
    assert_eq!(locked, 0);
    let l = lock.to_str().expect("utf-8");
    let out = r
        .elf(&["--lock", l, "-w", "100ms", "-m", "x", "--", "a"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(75), "{}", stderr(&out));
    assert!(one_line(&out.stderr).contains("claude-lock is held by another process"));
    drop(held);
    let out = r
        .elf(&["--lock", l, "-w", "1s", "-m", "x", "--", "a"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r.count(), 1);
    let link: PathBuf = r.join("link-lock");
    std::os::unix::fs::symlink(&lock, &link).expect("symlink");
    let out = r
        .elf(&[
            "--lock",
            link.to_str().expect("utf-8"),
            "-m",
            "x",
            "--",
            "a",
        ])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(77), "{}", stderr(&out));
}

#[test]
fn a_large_batch_is_written_as_one_pack() {
    let r = Repo::new();
    let n = 150;
    for i in 0..n {
        r.write(&format!("m/f{i:03}.md"), &format!("learning {i}\n"));
    }
    let values: Vec<Value> = (0..n)
        .map(|i| json!({"write":{"path":format!("m/f{i:03}.md")},"commit":{"message":format!("r{i}")}}))
        .collect();
    let out = r.elf_waiting(&["--batch"], &values);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r.count(), 1);
    assert_eq!(r.tree_files().len(), n);
    assert_eq!(r.status(), Vec::<String>::new());
    let counts = r.git(&["count-objects", "-v"]);
    assert!(
        counts.lines().any(|l| l == "count: 0"),
        "loose objects left: {counts}"
    );
    assert!(counts.lines().any(|l| l == "packs: 1"), "{counts}");
    r.assert_fsck();
    // The same process goes on with loose objects for small commits.
    r.write("m/f000.md", "changed\n");
    r.write("m/new.md", "new\n");
    let input = records(&[
        json!({"commit":{"paths":["m/f000.md"],"message":"change"}}),
        json!({"commit":{"paths":["m/new.md"],"message":"new"}}),
    ]);
    let out = run_with_input(r.elf(&[]), &input);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r.count(), 3);
    assert_eq!(r.status(), Vec::<String>::new());
    r.assert_fsck();
}

#[test]
fn ref_locks_left_behind_are_removed_only_when_provably_stale() {
    let r = Repo::new();
    r.git_commit_file("a", "a\n", "a");
    r.write("a", "changed\n");
    let ref_lock = r.join(".git/refs/heads/main.lock");
    // A live git's ref lock, young: wait, then 75 naming it.
    std::fs::write(&ref_lock, "").expect("ref lock");
    let out = r
        .elf(&["-w", "100ms", "-m", "x", "--", "a"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(75), "{}", stderr(&out));
    let line = one_line(&out.stderr);
    assert!(
        line.contains("refs/heads/main is locked: ") && line.contains("main.lock exists (age "),
        "{line}"
    );
    assert_eq!(r.count(), 1);
    // The index was brought up to date before the branch was to move: `a` is staged, not lost.
    assert_eq!(r.status(), ["M  a"]);
    // Old and open nowhere: removed, and the commit made.
    let touch = Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&ref_lock)
        .status()
        .expect("touch");
    assert!(touch.success());
    let out = r
        .elf(&["-w", "100ms", "-m", "x", "--", "a"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(one_line(&out.stderr).contains("removed stale"));
    assert_eq!(r.count(), 2);

    // Left by an elf-commit killed while it moved the branch: its index.lock declares the ref
    // lock; both go at once.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    let ns: String = std::fs::read_link("/proc/self/ns/pid")
        .expect("pid ns")
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let head = r.head();
    std::fs::write(
        r.join(".git/index.lock"),
        format!(
            "elf-commit pid 999999999 start 1 boot {} pidns {ns}\nref 1111111111111111111111111111111111111111 {}\n",
            boot.trim(),
            ref_lock.display()
        ),
    )
    .expect("index.lock");
    std::fs::write(&ref_lock, "").expect("ref lock");
    r.write("a", "again\n");
    let out = r
        .elf(&["-w", "5s", "-m", "y", "--", "a"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.lines().filter(|l| l.contains("removed stale")).count(),
        2,
        "{err}"
    );
    assert_eq!(r.git(&["rev-parse", "HEAD~1"]).trim(), head);
    assert!(!r.lock_left() && !ref_lock.exists());
    r.assert_fsck();
}

#[test]
fn waiting_records_get_one_commit_each() {
    let r = Repo::new();
    r.git_commit_file("seed", "seed\n", "seed");
    // The user's staged work, which no commit may take.
    r.write("staged.txt", "user's\n");
    r.git(&["add", "staged.txt"]);
    r.write("seed", "seed, unstaged edit\n");
    let n = 20; // more than one group of waiting records
    let mut values = Vec::new();
    for i in 0..n {
        r.write(&format!("m/f{i}.md"), &format!("{i}\n"));
        values.push(
            json!({"key": format!("k{i}"), "write":{"path": format!("m/f{i}.md")},
            "commit":{"message": format!("failure: {i}")}}),
        );
    }
    // A replay within the stream, a failed record and one for no tool of ours.
    values.insert(5, values[4].clone());
    values.insert(
        9,
        json!({"key":"failed","error":{"tool":"elf-write","code":65,"message":"bad"}}),
    );
    values.insert(12, json!({"key":"nothing for git","db":{"id":7}}));
    let out = r.elf_waiting(&[], &values);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), values.len());
    assert_eq!(r.count(), 1 + n);
    let log: Vec<String> = r
        .git(&["log", "--reverse", "--format=%H", "HEAD~20..HEAD"])
        .lines()
        .map(str::to_string)
        .collect();
    let mut made = Vec::new();
    for (rec, v) in recs.iter().zip(&values) {
        assert_eq!(rec["key"], v["key"]);
        if !rec.contains_key("write") {
            assert_eq!(&Value::Object(rec.clone()), v);
            continue;
        }
        let sha = sha_of(rec);
        if rec["commit"].get("unchanged").is_some() {
            assert_eq!(
                Some(&sha),
                made.last(),
                "a replay reports the commit before"
            );
            continue;
        }
        made.push(sha.clone());
        let file = rec["write"]["path"].as_str().expect("path");
        // Its own commit, holding exactly its own file, with its own message.
        assert_eq!(
            r.git(&["show", "--name-only", "--format=%s", &sha]).trim(),
            format!(
                "{}\n\n{file}",
                rec["commit"]["message"].as_str().expect("m")
            )
        );
    }
    assert_eq!(made, log);
    // One reflog entry for each commit, as git commit makes them.
    let reflog = r.git(&["reflog", "--format=%H %gs", "main"]);
    for (sha, i) in made.iter().rev().zip((0..n).rev()) {
        assert!(
            reflog.contains(&format!("{sha} commit: failure: {i}")),
            "{reflog}"
        );
    }
    assert_eq!(r.status(), [" M seed", "A  staged.txt"]);
    assert!(!r.lock_left());
    r.assert_fsck();
}

/// Waits for one output line of a running elf-commit.
fn next_line(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Value {
    let line = lines.next().expect("one line per record").expect("read");
    serde_json::from_str(&line).expect("json")
}

#[test]
fn a_stream_sees_what_git_did_between_two_records() {
    let r = Repo::new();
    r.git_commit_file("seed", "seed\n", "seed");
    let mut elf = r.elf(&[]);
    elf.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = elf.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut feed = |name: &str| {
        stdin
            .write_all(&records(&[
                json!({"commit":{"paths":[name],"message":format!("elf {name}")}}),
            ]))
            .expect("feed");
        stdin.flush().expect("flush");
    };

    r.write("a.md", "a\n");
    feed("a.md");
    let a = next_line(&mut lines);

    // git commits, and the user stages a new file and a change.
    r.git_commit_file("g.txt", "git's\n", "by git");
    let by_git = r.head();
    r.write("staged.txt", "user's\n");
    r.write("seed", "seed, staged\n");
    r.git(&["add", "staged.txt", "seed"]);
    r.write("b.md", "b\n");
    feed("b.md");
    let b = next_line(&mut lines);
    assert_eq!(
        r.git(&[
            "rev-parse",
            &format!("{}^", b["commit"]["sha"].as_str().expect("sha"))
        ])
        .trim(),
        by_git
    );
    assert_eq!(r.tree_files(), ["a.md", "b.md", "g.txt", "seed"]);
    assert_eq!(r.status(), ["M  seed", "A  staged.txt"]);

    // A new index altogether: the user unstages everything, then stages the removal of a.md.
    r.git(&["reset", "-q"]);
    std::fs::remove_file(r.join(".git/index")).expect("rm index");
    r.git(&["read-tree", "HEAD"]);
    r.git(&["rm", "-q", "--cached", "a.md"]);
    r.write("c.md", "c\n");
    feed("c.md");
    let c = next_line(&mut lines);
    drop(stdin);
    let status = watchdog(Duration::from_secs(60), move || child.wait().expect("wait"));
    assert!(status.success());
    assert_eq!(c["commit"]["sha"].as_str(), Some(r.head().as_str()));
    assert_eq!(
        r.git(&["show", "--name-only", "--format=", "HEAD"]).trim(),
        "c.md"
    );
    // a.md's staged removal is still only staged; the user's files are untouched.
    assert_eq!(r.tree_files(), ["a.md", "b.md", "c.md", "g.txt", "seed"]);
    assert_eq!(
        r.status(),
        ["D  a.md", " M seed", "?? a.md", "?? staged.txt"]
    );
    r.assert_linear(5);
    assert!(a["commit"]["sha"].is_string());
    assert!(!r.lock_left());
    r.assert_fsck();
}

/// The heuristics file the drain tests append to.
const HEURISTICS: &str = "memory/heuristics/testing.md";

/// A heuristic as a journaled record: its heading and its commit message take the row id
/// from the record (`$join`, `$ref`), as the ELF scripts' records do.
fn heuristic(key: &str, id: u32) -> Value {
    json!({"key": key, "db": {"id": id},
        "write": {"path": HEURISTICS, "mode": "append", "header": "# Heuristics: testing\n\n",
                  "content": {"$join": ["## H-", {"$ref": "/db/id"}, ": rule ", key, "\n"]}},
        "commit": {"message": {"$join": ["heuristic: H-", {"$ref": "/db/id"}]}}})
}

/// The lines a heuristic's entry adds, as `git diff` shows them.
fn entry_lines(key: &str, id: u32) -> Vec<String> {
    vec![
        format!("+<!-- elf:{key} -->"),
        format!("+## H-{id}: rule {key}"),
    ]
}

/// Checks that each of `recs` has a commit of its own, on the one before, holding exactly its
/// own entry (the first also the header) with its own message, and that the commit's file is
/// the work tree's file up to the record's `end`. Returns the commits.
fn assert_one_commit_per_entry(r: &Repo, recs: &[serde_json::Map<String, Value>]) -> Vec<String> {
    let file = std::fs::read(r.join(HEURISTICS)).expect("read");
    let mut shas = Vec::new();
    for (i, rec) in recs.iter().enumerate() {
        let sha = sha_of(rec);
        assert!(rec["commit"].get("unchanged").is_none(), "{rec:?}");
        let id = rec["db"]["id"].as_u64().and_then(|n| u32::try_from(n).ok());
        let id = id.expect("id");
        let key = rec["key"].as_str().expect("key");
        let mut want = Vec::new();
        if i == 0 {
            want.extend(["+# Heuristics: testing".to_string(), "+".to_string()]);
        }
        want.extend(entry_lines(key, id));
        assert_eq!(r.diff_lines(&[&format!("{sha}~1"), &sha]), want, "{key}");
        assert_eq!(
            r.git(&["show", "--name-only", "--format=%s", &sha]).trim(),
            format!("heuristic: H-{id}\n\n{HEURISTICS}")
        );
        let end = rec["write"]["end"].as_u64().expect("end");
        let end = usize::try_from(end).expect("end");
        let committed = r
            .git_cmd(&["show", &format!("{sha}:{HEURISTICS}")])
            .output()
            .expect("show");
        assert_eq!(committed.stdout, file[..end], "{key}");
        if let Some(before) = shas.last() {
            assert_eq!(r.git(&["rev-parse", &format!("{sha}~1")]).trim(), before);
        }
        shas.push(sha);
    }
    shas
}

/// A drain: elf-write appends three records to one file before elf-commit commits the first;
/// elf-commit, seeing them waiting together, still gives each a commit holding exactly its
/// own entry, and replaying the drain (the whole pipeline, then one record alone) commits
/// nothing.
#[test]
fn appends_to_one_file_waiting_together_get_one_commit_each() {
    let r = Repo::new();
    r.git_commit_file("seed", "seed\n", "seed");
    let values = [heuristic("k1", 1), heuristic("k2", 2), heuristic("k3", 3)];
    let written = r.elf_write(&values);
    let out = r.elf_waiting(&[], &written);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 3);
    let shas = assert_one_commit_per_entry(&r, &recs);
    assert_eq!(shas.last().map(String::as_str), Some(r.head().as_str()));
    assert_eq!(r.count(), 4);
    assert_eq!(r.status(), Vec::<String>::new());
    assert!(!r.lock_left());
    r.assert_fsck();

    // The same drain again, through the pipeline: every record finds its entry committed.
    let head = r.head();
    for input in [&values[..], &values[..1]] {
        let outs = pipeline(vec![r.elf_write_cmd(), r.elf(&[])], &records(input));
        for o in &outs {
            assert_eq!(code(o), Some(0), "{}", stderr(o));
        }
        let again = json_lines(&outs[1].stdout);
        assert_eq!(again.len(), input.len());
        for rec in &again {
            assert_eq!(rec["write"]["created"], false);
            assert_eq!(rec["commit"]["unchanged"], true, "{rec:?}");
            assert_eq!(sha_of(rec), head);
        }
    }
    assert_eq!(r.head(), head);
    assert_eq!(r.status(), Vec::<String>::new());
    r.assert_fsck();
}

/// A fourth append, written but not given to elf-commit (it waits for the next group): the
/// three commits hold only their own entries, and the fourth entry is a change in the work
/// tree, not staged. Then the same with the three committed as one (`--batch`), and the
/// fourth committed later on its own.
#[test]
fn an_append_written_but_not_committed_stays_an_unstaged_change() {
    for batch in [false, true] {
        let r = Repo::new();
        r.git_commit_file("seed", "seed\n", "seed");
        let values: Vec<Value> = (1..=4).map(|i| heuristic(&format!("k{i}"), i)).collect();
        let written = r.elf_write(&values);
        let args: &[&str] = if batch { &["--batch"] } else { &[] };
        let out = r.elf_waiting(args, &written[..3]);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        let recs = json_lines(&out.stdout);
        if batch {
            assert_eq!(r.count(), 2);
            let mut want = vec!["+# Heuristics: testing".to_string(), "+".to_string()];
            for i in 1..=3 {
                want.extend(entry_lines(&format!("k{i}"), i));
                assert_eq!(sha_of(&recs[usize::try_from(i - 1).expect("i")]), r.head());
            }
            assert_eq!(r.diff_lines(&["HEAD~1", "HEAD"]), want);
        } else {
            assert_one_commit_per_entry(&r, &recs);
            assert_eq!(r.count(), 4);
        }
        assert_eq!(r.diff_lines(&[]), entry_lines("k4", 4), "unstaged");
        assert_eq!(r.git(&["diff", "--cached"]), "", "nothing staged");
        assert_eq!(r.status(), [format!(" M {HEURISTICS}")]);
        r.assert_fsck();

        // Replayed, the three commit nothing and leave the fourth as it was.
        let head = r.head();
        let out = r.elf_waiting(args, &written[..3]);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        assert!(
            json_lines(&out.stdout)
                .iter()
                .all(|rec| rec["commit"]["unchanged"] == true)
        );
        assert_eq!(r.head(), head);
        assert_eq!(r.git(&["diff", "--cached"]), "", "nothing staged");
        assert_eq!(r.diff_lines(&[]), entry_lines("k4", 4), "unstaged");

        // The fourth, in the next group: its own entry, and the work tree clean.
        let out = r.elf_waiting(args, &written[3..]);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        assert_eq!(r.diff_lines(&["HEAD~1", "HEAD"]), entry_lines("k4", 4));
        assert_eq!(r.status(), Vec::<String>::new());
        r.assert_fsck();
    }
}

/// A live drain: elf-write appends batch after batch to one file while elf-commit commits the
/// groups it finds waiting, so the file grows under elf-commit at any instant; still every
/// record gets one commit holding exactly its own entry, and nothing is left over.
#[test]
fn a_live_drain_gives_every_append_its_own_commit() {
    let r = Repo::new();
    r.git_commit_file("seed", "seed\n", "seed");
    let n: u32 = 200;
    let values: Vec<Value> = (1..=n).map(|i| heuristic(&format!("k{i}"), i)).collect();
    let outs = pipeline(vec![r.elf_write_cmd(), r.elf(&[])], &records(&values));
    for o in &outs {
        assert_eq!(code(o), Some(0), "{}", stderr(o));
    }
    let recs = json_lines(&outs[1].stdout);
    assert_eq!(recs.len(), values.len());
    assert!(
        recs.iter()
            .all(|rec| rec["commit"].get("unchanged").is_none())
    );
    assert_eq!(r.count(), 1 + usize::try_from(n).expect("n"));
    // Each commit's patch, oldest first: exactly its own entry (the first, the header too).
    let log = r.git(&[
        "log",
        "--reverse",
        "-p",
        "--no-color",
        "--format=>>> %s",
        "HEAD~200..HEAD",
    ]);
    let mut patches: Vec<(String, Vec<String>)> = Vec::new();
    for line in log.lines() {
        if let Some(subject) = line.strip_prefix(">>> ") {
            patches.push((subject.to_string(), Vec::new()));
        } else if (line.starts_with('+') && !line.starts_with("+++"))
            || (line.starts_with('-') && !line.starts_with("---"))
        {
            if let Some(p) = patches.last_mut() {
                p.1.push(line.to_string());
            }
        }
    }
    assert_eq!(patches.len(), values.len());
    for (i, (subject, lines)) in (1..=n).zip(&patches) {
        let mut want = Vec::new();
        if i == 1 {
            want.extend(["+# Heuristics: testing".to_string(), "+".to_string()]);
        }
        want.extend(entry_lines(&format!("k{i}"), i));
        assert_eq!(subject, &format!("heuristic: H-{i}"));
        assert_eq!(lines, &want, "H-{i}");
    }
    assert_eq!(r.status(), Vec::<String>::new());
    r.assert_fsck();
}

/// The prefix is taken only when it is provably the record's own: an `end` that does not
/// land just after the record's marker and content, or a record without a key, commits the
/// whole file, as before. A `write` array's appends use their indexed markers.
#[test]
fn appends_that_cannot_be_checked_commit_the_whole_file() {
    let r = Repo::new();
    r.git_commit_file("seed", "seed\n", "seed");
    let values = [heuristic("k1", 1), heuristic("k2", 2), heuristic("k3", 3)];
    let mut written = r.elf_write(&values);
    // k1's end one byte short: its commit takes the whole file; k2 and k3 have nothing left.
    let end = written[0]["write"]["end"].as_u64().expect("end");
    written[0]["write"]["end"] = json!(end - 1);
    let out = r.elf_waiting(&[], &written);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(r.count(), 2);
    assert!(recs[0]["commit"].get("unchanged").is_none());
    assert_eq!(recs[1]["commit"]["unchanged"], true);
    assert_eq!(recs[2]["commit"]["unchanged"], true);
    assert_eq!(r.status(), Vec::<String>::new());

    // A record with two appends to one file: each entry has its own marker, and the record's
    // commit takes the file up to its second entry, not the next record's.
    let pair = json!({"key": "pair", "write": [
        {"path": "log.md", "mode": "append", "content": "first\n"},
        {"path": "log.md", "mode": "append", "content": "second\n"}],
        "commit": {"message": "pair"}});
    let next = json!({"key": "next", "write": {"path": "log.md", "mode": "append",
        "content": "next\n"}, "commit": {"message": "next"}});
    let written = r.elf_write(&[pair, next]);
    let out = r.elf_waiting(&[], &written);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r.count(), 4);
    assert_eq!(
        r.diff_lines(&["HEAD~2", "HEAD~1"]),
        [
            "+<!-- elf:pair 0 -->",
            "+first",
            "+<!-- elf:pair 1 -->",
            "+second"
        ]
    );
    assert_eq!(
        r.diff_lines(&["HEAD~1", "HEAD"]),
        ["+<!-- elf:next -->", "+next"]
    );
    assert_eq!(r.status(), Vec::<String>::new());
    r.assert_fsck();
}

/// References in `commit` are resolved against the record; a bad one is a bad record naming
/// the line and the pointer.
#[test]
fn references_in_commit_are_resolved_against_the_record() {
    let r = Repo::new();
    r.write("memory/a.md", "a\n");
    let good = json!({"db": {"id": 7}, "file": "memory/a.md",
        "commit": {"paths": [{"$ref": "/file"}],
                   "message": {"$join": ["failure: ", {"$ref": "/db/id"}]}}});
    let bad = json!({"commit": {"paths": "memory/a.md", "message": {"$ref": "/db/title"}}});
    let out = run_with_input(r.elf(&[]), &records(&[good.clone(), bad.clone()]));
    assert_eq!(code(&out), Some(65));
    assert_eq!(
        one_line(&out.stderr),
        "elf-commit: line 2: commit: reference \"/db/title\" resolves to nothing in the record"
    );
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 1);
    // The references stay as written; the results are added beside them.
    assert_eq!(recs[0]["commit"]["paths"], good["commit"]["paths"]);
    assert_eq!(recs[0]["commit"]["message"], good["commit"]["message"]);
    assert_eq!(r.subject_and_body("HEAD").0, "failure: 7");
    assert_eq!(r.tree_files(), ["memory/a.md"]);

    let whole = json!({"c": {"paths": ["memory/a.md"], "message": "m"}, "commit": {"$ref": "/c"}});
    let out = run_with_input(r.elf(&["--keep-going"]), &records(&[bad, whole]));
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs[0]["error"]["code"], 65);
    assert_eq!(recs[0]["error"]["line"], 1);
    assert_eq!(recs[1]["error"]["code"], 65);
    assert!(
        recs[1]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a reference")),
        "{:?}",
        recs[1]
    );
    assert_eq!(r.count(), 1);
}

/// A repository elf-commit cannot work in (SHA-256 objects, reftable refs): `--check` and every
/// commit exit 69 with one line saying what is unsupported, a status no caller retries;
/// nothing is committed and the index is not touched.
#[test]
fn unsupported_repositories_exit_69_and_check_says_so() {
    for (args, what) in [
        (
            &["--object-format=sha256"][..],
            "unsupported: sha256 object format",
        ),
        (
            &["--ref-format=reftable"][..],
            "unsupported: repository extension extensions.refstorage",
        ),
    ] {
        let r = Repo::init(args);
        r.git_commit_file("seed", "seed\n", "seed");
        r.write("memory/a.md", "a\n");
        let index = std::fs::read(r.join(".git/index")).expect("index");
        let head = r.head();
        let out = r.elf(&["--check"]).output().expect("run");
        assert_eq!(code(&out), Some(69), "{args:?}: {}", stderr(&out));
        assert!(
            one_line(&out.stderr).starts_with(&format!("elf-commit: {what}")),
            "{}",
            stderr(&out)
        );
        let out = r
            .elf(&["-m", "x", "--", "memory/a.md"])
            .output()
            .expect("run");
        assert_eq!(code(&out), Some(69), "{}", stderr(&out));
        assert!(one_line(&out.stderr).contains(what), "{}", stderr(&out));
        let rec = json!({"key": "k", "commit": {"paths": ["memory/a.md"], "message": "m"}});
        let out = r.elf_waiting(&[], std::slice::from_ref(&rec));
        assert_eq!(code(&out), Some(69), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "a failed record is not passed on");
        // The repository cannot be opened at all: no record is read, whatever --keep-going.
        let out = r.elf_waiting(&["--keep-going"], &[rec]);
        assert_eq!(code(&out), Some(69), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert_eq!(r.head(), head);
        assert_eq!(std::fs::read(r.join(".git/index")).expect("index"), index);
        assert!(!r.lock_left());
    }
    // --check is a question about the repository: no paths, no record flags.
    let r = Repo::new();
    let out = r.elf(&["--check"]).output().expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    for bad in [
        &["--check", "--", "a"][..],
        &["--check", "--batch"],
        &["--check", "-m", "x"],
    ] {
        let out = r.elf(bad).output().expect("run");
        assert_eq!(code(&out), Some(64), "{bad:?}: {}", stderr(&out));
    }
    // No identity: the status a commit would fail with.
    r.git(&["config", "--unset", "user.name"]);
    let out = r.elf(&["--check"]).output().expect("run");
    assert_eq!(code(&out), Some(64), "{}", stderr(&out));
}

/// Indexes and settings git may leave that libgit2 does not read as they are (a split index,
/// a sparse index) or reads as they are (index v4, index.skipHash, extensions.worktreeConfig,
/// the untracked cache): `--check` says yes, a record's commit holds exactly its path, the
/// user's staged file stays staged, `git status` is clean afterwards, and again after git has
/// written the index its own way once more.
#[test]
fn split_sparse_v4_skiphash_and_worktree_config_repositories_are_committed_in() {
    type Setup = fn(&Repo);
    let setups: [(&str, Setup); 6] = [
        ("splitIndex", |r| {
            r.git(&["config", "core.splitIndex", "true"]);
            r.git(&["update-index", "--split-index"]);
        }),
        ("sparse index", |r| {
            r.git(&["sparse-checkout", "set", "--cone", "memory", "other"]);
            r.git(&["config", "index.sparse", "true"]);
            r.git(&["sparse-checkout", "reapply"]);
        }),
        ("index v4", |r| {
            r.git(&["update-index", "--index-version", "4"]);
        }),
        ("skipHash", |r| {
            r.git(&["config", "index.skipHash", "true"]);
            r.git(&["update-index", "--really-refresh"]);
        }),
        ("worktreeConfig", |r| {
            r.git(&["config", "core.repositoryformatversion", "1"]);
            r.git(&["config", "extensions.worktreeConfig", "true"]);
            r.git(&["config", "--worktree", "user.name", "Worktree User"]);
        }),
        ("untracked cache", |r| {
            r.git(&["config", "core.untrackedCache", "true"]);
            r.git(&["update-index", "--untracked-cache"]);
            r.git(&["status", "--porcelain"]);
        }),
    ];
    for (name, setup) in setups {
        let r = Repo::new();
        r.git_commit_file("memory/seed.md", "seed\n", "seed");
        r.git_commit_file("outside/x.md", "x\n", "outside the sparse cone");
        setup(&r);
        let signature: &[u8] = match name {
            "splitIndex" => b"link",
            "sparse index" => b"sdir",
            _ => b"",
        };
        let index = std::fs::read(r.join(".git/index")).expect("index");
        assert!(
            signature.is_empty() || index.windows(4).any(|w| w == signature),
            "{name}: not set up"
        );
        if name == "index v4" {
            assert_eq!(index[4..8], [0, 0, 0, 4]);
        }
        if name == "skipHash" {
            assert!(index.ends_with(&[0; 20]), "{name}: not set up");
        }
        let out = r.elf(&["--check"]).output().expect("run");
        assert_eq!(code(&out), Some(0), "{name}: {}", stderr(&out));
        for round in 1..=2 {
            let staged = format!("other/staged{round}.md");
            r.write(&staged, "staged\n");
            r.git(&["add", &staged]);
            let index = std::fs::read(r.join(".git/index")).expect("index");
            assert!(
                signature.is_empty() || index.windows(4).any(|w| w == signature),
                "{name} {round}: git wrote it whole"
            );
            let path = format!("memory/r{round}.md");
            r.write(&path, "entry\n");
            let rec =
                json!({"key": format!("k{round}"), "commit": {"paths": [path], "message": "m"}});
            let out = r.elf_waiting(&[], &[rec]);
            assert_eq!(code(&out), Some(0), "{name} {round}: {}", stderr(&out));
            assert_eq!(
                r.git(&["show", "--name-only", "--format=", "HEAD"]).trim(),
                path,
                "{name} {round}"
            );
            assert_eq!(r.status(), [format!("A  {staged}")], "{name} {round}");
            if name == "worktreeConfig" {
                assert_eq!(
                    r.git(&["log", "-1", "--format=%an"]).trim(),
                    "Worktree User"
                );
            }
            r.git(&["commit", "-q", "-m", "staged"]);
            assert_eq!(r.status(), Vec::<String>::new(), "{name} {round}");
            r.assert_fsck();
            assert!(!r.lock_left(), "{name}");
        }
    }
}

/// The user's own edits in a file records append to stay theirs: the commit of each record is
/// HEAD's file plus exactly the record's entry, the index entry the index's file plus the same
/// entries, so a staged hunk stays staged and an unstaged one unstaged (in the middle of the
/// file or at its end, where the records append after it); the work tree is not touched. One
/// record, two waiting together (one commit each) and the two as one commit (`--batch`).
#[test]
fn the_users_staged_and_unstaged_edits_in_an_appended_file_stay_theirs() {
    let staged_hunk = ["-## H-1: rule k1", "+## H-1: rule k1, staged"];
    let unstaged_hunk = ["-# Heuristics: testing", "+# Heuristics: testing, unstaged"];
    let cases: [(&str, bool, bool, bool); 5] = [
        ("staged", true, false, false),
        ("unstaged", false, true, false),
        ("both", true, true, false),
        ("both, at the end", true, true, true),
        ("nothing", false, false, false),
    ];
    for (name, staged, unstaged, at_end) in cases {
        for (n, args) in [(1, &[][..]), (2, &[][..]), (2, &["--batch"][..])] {
            let what = format!("{name}, {n} records {args:?}");
            let r = Repo::new();
            r.git_commit_file("seed", "seed\n", "seed");
            let seeded = r.elf_write(&[heuristic("k1", 1), heuristic("k2", 2)]);
            let out = r.elf_waiting(&[], &seeded);
            assert_eq!(code(&out), Some(0), "{}", stderr(&out));
            let file = r.join(HEURISTICS);
            let text = std::fs::read_to_string(&file).expect("read");
            let mut want_staged: Vec<String> = Vec::new();
            let mut want_unstaged: Vec<String> = Vec::new();
            if staged {
                let edited = text.replace("rule k1\n", "rule k1, staged\n");
                std::fs::write(&file, edited).expect("edit");
                r.git(&["add", HEURISTICS]);
                want_staged.extend(staged_hunk.map(String::from));
            }
            if unstaged {
                let now = std::fs::read_to_string(&file).expect("read");
                let mut edited = now.replace("testing\n", "testing, unstaged\n");
                want_unstaged.extend(unstaged_hunk.map(String::from));
                if at_end {
                    edited.push_str("a note of the user's, not staged\n");
                    want_unstaged.push("+a note of the user's, not staged".into());
                }
                std::fs::write(&file, edited).expect("edit");
            }
            let head_before = r.git(&["show", &format!("HEAD:{HEURISTICS}")]);
            let values: Vec<Value> = (3..3 + n).map(|i| heuristic(&format!("k{i}"), i)).collect();
            let written = r.elf_write(&values);
            let tree_before = std::fs::read(&file).expect("read");
            let out = r.elf_waiting(args, &written);
            assert_eq!(code(&out), Some(0), "{what}: {}", stderr(&out));
            assert_eq!(
                std::fs::read(&file).expect("read"),
                tree_before,
                "{what}: work tree"
            );

            let mut want_head = head_before.clone();
            for i in 3..3 + n {
                want_head.push_str(&format!("<!-- elf:k{i} -->\n## H-{i}: rule k{i}\n"));
            }
            assert_eq!(
                r.git(&["show", &format!("HEAD:{HEURISTICS}")]),
                want_head,
                "{what}"
            );
            if n == 2 && args.is_empty() {
                assert_eq!(
                    r.diff_lines(&["HEAD~1", "HEAD"]),
                    entry_lines("k4", 4),
                    "{what}"
                );
                assert_eq!(
                    r.diff_lines(&["HEAD~2", "HEAD~1"]),
                    entry_lines("k3", 3),
                    "{what}"
                );
            }
            assert_eq!(r.diff_lines(&["--cached"]), want_staged, "{what}: staged");
            assert_eq!(r.diff_lines(&[]), want_unstaged, "{what}: not staged");
            r.assert_fsck();

            // Replayed: nothing new, and the user's edits are still where they were.
            let head = r.head();
            let out = r.elf_waiting(args, &written);
            assert_eq!(code(&out), Some(0), "{what}: {}", stderr(&out));
            assert_eq!(r.head(), head, "{what}: replay");
            assert_eq!(r.diff_lines(&["--cached"]), want_staged, "{what}: staged");
            assert_eq!(r.diff_lines(&[]), want_unstaged, "{what}: not staged");
        }
    }
}

/// The user staged the file's deletion (`git rm --cached`): the record's commit still holds
/// HEAD's file plus its entry, and the index entry is left as the user left it (absent).
#[test]
fn an_appended_file_whose_deletion_is_staged_keeps_the_deletion_staged() {
    let r = Repo::new();
    let seeded = r.elf_write(&[heuristic("k1", 1)]);
    let out = r.elf_waiting(&[], &seeded);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let head_before = r.git(&["show", &format!("HEAD:{HEURISTICS}")]);
    r.git(&["rm", "-q", "--cached", HEURISTICS]);
    let written = r.elf_write(&[heuristic("k2", 2)]);
    let out = r.elf_waiting(&[], &written);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        r.git(&["show", &format!("HEAD:{HEURISTICS}")]),
        format!("{head_before}<!-- elf:k2 -->\n## H-2: rule k2\n")
    );
    assert_eq!(
        r.status(),
        [format!("D  {HEURISTICS}"), "?? memory/".to_string()]
    );
}

/// A home that is a linked worktree (`git worktree add`: `.git` is a file naming
/// `.git/worktrees/NAME`): elf-commit commits on that worktree's branch with that worktree's
/// index, takes its locks in that git directory (`--lock DIR/.git/NAME` included), and leaves
/// the main work tree alone.
#[test]
fn a_linked_worktree_is_committed_in_with_its_own_index_and_locks() {
    let r = Repo::new();
    r.git_commit_file("seed", "seed\n", "seed");
    let wt = r.dir.join("wt");
    let wts = wt.to_str().expect("utf-8");
    r.git(&["worktree", "add", "-q", "-b", "side", wts]);
    let in_wt = |args: &[&str]| {
        let mut all = vec!["-C", wts];
        all.extend_from_slice(args);
        r.git(&all)
    };
    std::fs::write(wt.join("staged.md"), "staged\n").expect("write");
    in_wt(&["add", "staged.md"]);
    let main_before = r.head();
    let lock = wt.join(".git/claude-lock");
    let values = [heuristic("k1", 1), heuristic("k2", 2)];
    let mut write = cmd(WRITE_BIN);
    r.env(&mut write);
    write.arg("--root").arg(&wt);
    let outs = pipeline(
        vec![
            write,
            r.elf(&["--repo", wts, "--lock", lock.to_str().expect("utf-8")]),
        ],
        &records(&values),
    );
    for o in &outs {
        assert_eq!(code(o), Some(0), "{}", stderr(o));
    }
    let recs = json_lines(&outs[1].stdout);
    assert_eq!(recs.len(), 2);
    assert_eq!(sha_of(&recs[1]), in_wt(&["rev-parse", "side"]).trim());
    assert_eq!(in_wt(&["rev-list", "--count", "side"]).trim(), "3");
    assert_eq!(r.head(), main_before, "main's branch did not move");
    assert_eq!(
        r.status(),
        Vec::<String>::new(),
        "main's work tree and index"
    );
    assert_eq!(
        in_wt(&["status", "--porcelain"])
            .lines()
            .collect::<Vec<_>>(),
        ["A  staged.md"]
    );
    let wt_gitdir = r.join(".git/worktrees/wt");
    assert!(
        wt_gitdir.join("claude-lock").is_file(),
        "the lock in the worktree's git dir"
    );
    assert!(!wt_gitdir.join("index.lock").exists());
    assert!(!r.join(".git/claude-lock").exists());
    assert!(!r.lock_left());
    let out = r.elf(&["--repo", wts, "--check"]).output().expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    r.assert_fsck();
}

/// A home whose `.git` is a file naming a git directory elsewhere (a submodule's checkout,
/// `git init --separate-git-dir`) is committed in; one whose `.git` file names nothing, or is
/// not a `gitdir:` line, is refused with 66 and a line saying so, `--init` or not, and nothing
/// is created over it; a folder inside another repository's work tree is not that repository
/// (66, naming the outer work tree), so nothing is committed there.
#[test]
fn homes_whose_git_is_a_file_and_folders_inside_another_repository() {
    let r = Repo::new();
    r.git(&["config", "--global", "user.name", "Test User"]);
    r.git(&["config", "--global", "user.email", "test@example.com"]);
    let home = r.dir.join("sep-home");
    let gitdir = r.dir.join("sep.git");
    let (hs, gs) = (
        home.to_str().expect("utf-8"),
        gitdir.to_str().expect("utf-8"),
    );
    r.git(&["init", "-q", "-b", "main", "--separate-git-dir", gs, hs]);
    assert!(home.join(".git").is_file());
    std::fs::write(home.join("a.md"), "a\n").expect("write");
    let out = r.elf(&["--repo", hs, "--check"]).output().expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let out = r
        .elf(&["--repo", hs, "-m", "a", "--", "a.md"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(r.git(&["-C", hs, "rev-parse", "HEAD"]).trim(), sha);
    assert_eq!(r.git(&["-C", hs, "status", "--porcelain"]), "");
    assert!(gitdir.join("elf-commit.lock").is_file());

    // A .git file naming nothing, and one that is not a gitdir line.
    for (name, text, what) in [
        ("gone", "gitdir: ../nowhere\n", "which is not one"),
        ("garbled", "not a gitdir line\n", "is a file but not"),
    ] {
        let dir = r.dir.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(".git"), text).expect("write");
        std::fs::write(dir.join("a.md"), "a\n").expect("write");
        let d = dir.to_str().expect("utf-8");
        for args in [&["--repo", d][..], &["--repo", d, "--init"]] {
            let mut all = args.to_vec();
            all.extend(["-m", "a", "--", "a.md"]);
            let out = r.elf(&all).output().expect("run");
            assert_eq!(code(&out), Some(66), "{name} {args:?}: {}", stderr(&out));
            assert!(one_line(&out.stderr).contains(what), "{}", stderr(&out));
            assert_eq!(
                std::fs::read_to_string(dir.join(".git")).expect("read"),
                text
            );
            assert!(!r.dir.join("nowhere").exists());
        }
    }

    // A folder in the work tree of `r`, without a .git of its own.
    r.git_commit_file("seed", "seed\n", "seed");
    r.write("inner/b.md", "b\n");
    let head = r.head();
    let inner = r.join("inner");
    let i = inner.to_str().expect("utf-8");
    let out = r
        .elf(&["--repo", i, "-m", "b", "--", "b.md"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(66), "{}", stderr(&out));
    assert!(
        one_line(&out.stderr).contains("is a folder in the work tree"),
        "{}",
        stderr(&out)
    );
    assert_eq!(r.head(), head);
    // With --init it becomes a repository of its own, and the outer one gets nothing.
    let out = r
        .elf(&["--repo", i, "--init", "-m", "b", "--", "b.md"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(inner.join(".git").is_dir());
    assert_eq!(r.head(), head);
    assert_eq!(r.git(&["-C", i, "log", "--format=%s"]).trim(), "b");
}

/// A path git would put through a program of the user's (a `filter=` driver with a clean or
/// process command, git-lfs's among them, or a required one; a `working-tree-encoding`) is
/// refused with 69 before anything of its record is committed, the other records of the group
/// committed all the same; a driver named but not configured is no filter, as for git. The
/// end-of-line attributes and `core.autocrlf` are applied, to whole files and to appends:
/// `git status` shows every committed path clean.
#[test]
fn filter_drivers_are_refused_and_end_of_line_conversions_applied() {
    let r = Repo::new();
    r.git(&["config", "filter.up.clean", "tr a-z A-Z"]);
    r.git(&["config", "filter.lfs.process", "git-lfs filter-process"]);
    r.git(&["config", "filter.lfs.required", "true"]);
    r.git_commit_file(
        ".gitattributes",
        "*.up filter=up\n*.lfs filter=lfs\n*.none filter=none\n*.u16 working-tree-encoding=UTF-16\n\
         *.crlf text eol=crlf\n",
        "attributes",
    );
    let head = r.head();
    let index = std::fs::read(r.join(".git/index")).expect("index");
    for (path, what) in [
        (
            "memory/x.up",
            "goes through the filter driver up (.gitattributes filter=up, filter.up.clean)",
        ),
        (
            "memory/x.lfs",
            "goes through the filter driver lfs (.gitattributes filter=lfs, filter.lfs.process)",
        ),
        (
            "memory/x.u16",
            "has working-tree-encoding=UTF-16 (.gitattributes)",
        ),
    ] {
        r.write(path, "lower case\n");
        let out = r.elf(&["-m", "x", "--", path]).output().expect("run");
        assert_eq!(code(&out), Some(69), "{path}: {}", stderr(&out));
        assert_eq!(
            one_line(&out.stderr),
            format!(
                "elf-commit: unsupported: {path} {what}, which elf-commit does not {}; commit it with git",
                if path.ends_with("u16") {
                    "convert"
                } else {
                    "run"
                }
            )
        );
        // A folder naming it is refused too, and nothing of the record is committed.
        r.write("memory/plain.md", "plain\n");
        let out = r.elf(&["-m", "x", "--", "memory"]).output().expect("run");
        assert_eq!(code(&out), Some(69), "{path}: {}", stderr(&out));
        assert_eq!(r.head(), head);
        assert_eq!(std::fs::read(r.join(".git/index")).expect("index"), index);
        std::fs::remove_file(r.join(path)).expect("rm");
    }
    // In a group: the filtered record fails on its own under --keep-going.
    r.write("memory/x.up", "lower case\n");
    let recs = [
        json!({"commit": {"paths": ["memory/x.up"], "message": "up"}}),
        json!({"commit": {"paths": ["memory/plain.md"], "message": "plain"}}),
    ];
    let out = r.elf_waiting(&["--keep-going"], &recs);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let got = json_lines(&out.stdout);
    assert_eq!(got[0]["error"]["code"], 69);
    assert!(got[1].get("error").is_none(), "{:?}", got[1]);
    assert_eq!(r.tree_files(), [".gitattributes", "memory/plain.md"]);

    // No filter configured for the driver: the file as it is, as git does.
    r.write("memory/x.none", "lower case\n");
    // CRLF in the work tree, LF in the repository: eol=crlf, and core.autocrlf.
    r.write("memory/x.crlf", "one\r\ntwo\r\n");
    let out = r
        .elf(&["-m", "eol", "--", "memory/x.none", "memory/x.crlf"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r.git(&["show", "HEAD:memory/x.none"]), "lower case\n");
    assert_eq!(r.git(&["show", "HEAD:memory/x.crlf"]), "one\ntwo\n");
    r.git(&["config", "core.autocrlf", "true"]);
    r.write("memory/auto.md", "auto\r\n");
    let out = r
        .elf(&["-m", "auto", "--", "memory/auto.md"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(r.git(&["show", "HEAD:memory/auto.md"]), "auto\n");
    // An append with CRLF content to an eol=crlf file, and one to an autocrlf file.
    let appends = [
        json!({"key": "c1", "write": {"path": "memory/log.crlf", "mode": "append",
            "content": "entry\r\n"}, "commit": {"message": "c1"}}),
        json!({"key": "c2", "write": {"path": "memory/auto.md", "mode": "append",
            "content": "more\r\n"}, "commit": {"message": "c2"}}),
    ];
    let written = r.elf_write(&appends);
    let out = r.elf_waiting(&[], &written);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        r.git(&["show", "HEAD~1:memory/log.crlf"]),
        "<!-- elf:c1 -->\nentry\n"
    );
    assert_eq!(
        r.git(&["show", "HEAD:memory/auto.md"]),
        "auto\n<!-- elf:c2 -->\nmore\n"
    );
    assert_eq!(r.status(), ["?? memory/x.up"]);
    r.assert_fsck();
}

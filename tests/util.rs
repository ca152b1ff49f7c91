//! The shared test harness: temporary folders, commands with a clean environment, pipelines,
//! JSON-lines decoding and a deadlock watchdog.

#![allow(dead_code)]

use std::borrow::BorrowMut;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A temporary folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var_os("ELF_TEST_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!(
            "elf-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p.canonicalize().expect("canonical temp dir"))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("ELF_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Environment variables that change the tools' behaviour, removed from every test command.
const SCRUB: &[&str] = &[
    "ELF_DB",
    "ELF_HOME",
    "ELF_FAKE_CLOCK",
    "ELF_LOCK_HELD",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
];

/// A command for a binary, with the behaviour-changing environment removed.
pub fn cmd(bin: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(bin);
    for v in SCRUB {
        c.env_remove(v);
    }
    c.env("LC_ALL", "C");
    c
}

/// Asserts that a command exited with status 0, showing its output when not.
pub fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command with `input` on stdin and returns its output (killing it, and failing, if it
/// runs for 10 minutes).
pub fn run_with_input(c: impl BorrowMut<Command>, input: &[u8]) -> Output {
    run_with_input_within(c, input, Duration::from_secs(600))
}

/// Runs a command with `input` on stdin and returns its output; kills it and fails the test
/// ("deadlock") if it runs longer than `limit`.
pub fn run_with_input_within(
    mut c: impl BorrowMut<Command>,
    input: &[u8],
    limit: Duration,
) -> Output {
    let c = c.borrow_mut();
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out_reader = drain(Box::new(child.stdout.take().expect("stdout")));
    let err_reader = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("deadlock: {c:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = feeder.join();
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// `a | b | c`: each command's stdout feeds the next; returns every command's output (the
/// stdout of all but the last is empty, having been piped on).
pub fn pipeline(cmds: Vec<Command>, input: &[u8]) -> Vec<Output> {
    let mut children = Vec::new();
    let mut prev: Option<std::process::ChildStdout> = None;
    let n = cmds.len();
    let mut first_stdin = None;
    for (i, mut c) in cmds.into_iter().enumerate() {
        match prev.take() {
            Some(out) => {
                c.stdin(Stdio::from(out));
            }
            None => {
                c.stdin(Stdio::piped());
            }
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn pipeline stage");
        if i == 0 {
            first_stdin = child.stdin.take();
        }
        if i + 1 < n {
            prev = child.stdout.take();
        }
        children.push(child);
    }
    if let Some(mut s) = first_stdin {
        let data = input.to_vec();
        std::thread::spawn(move || {
            let _ = s.write_all(&data);
        });
    }
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait stage"))
        .collect()
}

/// Parses JSON lines strictly: every line must be one JSON object.
pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Map<String, Value>> {
    let text = std::str::from_utf8(bytes).expect("output is UTF-8");
    text.lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => m,
            other => panic!("not a JSON object line: {l:?} ({other:?})"),
        })
        .collect()
}

/// The one line of stderr, checked to be exactly one line.
pub fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).to_string();
    assert_eq!(
        text.matches('\n').count(),
        1,
        "expected one line on stderr, got {text:?}"
    );
    text.trim_end().to_string()
}

/// Runs `f` on a thread and fails with "deadlock" if it does not finish within `limit`.
pub fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("deadlock: not finished within {limit:?}"),
    }
}

/// Waits until `cond` holds, polling, or panics with `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A heavy-run scale: the default count, or the full one when `ELF_STRESS_FULL=1`.
pub fn scale(default: usize, full: usize) -> usize {
    if std::env::var_os("ELF_STRESS_FULL").is_some_and(|v| v == "1") {
        full
    } else {
        default
    }
}

/// Says why a test that needs root cannot run here, for the caller to return and pass. As root
/// (CI runs the suite as root) the test can always run, so there a reason to skip is a failure:
/// a skip never hides a test that should have run.
pub fn skip_unless_root(test: &str, why: &str) {
    // SAFETY: geteuid(2) only reads the process's credentials.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(!root, "{test}: cannot run as root: {why}");
    eprintln!("{test}: skipped (not root): {why}");
}

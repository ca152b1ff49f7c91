//! One meaning for each flag and status across the tools: `--keep-going`'s exit status, the
//! duration syntax, the stream form's folders, and each tool's own list of exit statuses
//! (in `--help`, drawn from elf-core's one table, and holding every status its code returns).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::util::{TempDir, cmd, json_lines, run_with_input};

const TOOLS: &[&str] = &[
    "elf-backoff",
    "elf-lock",
    "elf-write",
    "elf-db",
    "elf-commit",
];

fn bin(tool: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join(tool)
}

fn help(tool: &str) -> String {
    let out = cmd(bin(tool)).arg("--help").output().expect("run --help");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The codes of the "Exit status:" section of a tool's `--help`.
fn listed_exits(tool: &str) -> BTreeSet<String> {
    let text = help(tool);
    let section = text.split("\nExit status:\n").nth(1).unwrap_or("");
    section
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn keep_going_exits_0_when_every_failure_became_an_error_record_in_every_tool() {
    let t = TempDir::new();
    let git = std::process::Command::new("git")
        .args(["init", "-q"])
        .arg(t.join("repo"))
        .status()
        .expect("git init");
    assert!(git.success());
    let db = t.join("x.db");
    rusqlite::Connection::open(&db)
        .and_then(|c| c.execute_batch("CREATE TABLE t (a TEXT);"))
        .expect("db");
    // A good record and a bad one for each tool; the bad one is of the kind each tool turns
    // into an error record.
    let cases: Vec<(&str, std::process::Command, &str)> = vec![
        (
            "elf-write",
            {
                let mut c = cmd(bin("elf-write"));
                c.args(["--keep-going", "--root"]).arg(t.path());
                c
            },
            "{\"write\":{\"path\":\"a.txt\",\"content\":\"x\"}}\n{\"write\":{\"path\":\"/etc/x\",\"content\":\"x\"}}\n",
        ),
        (
            "elf-db",
            {
                let mut c = cmd(bin("elf-db"));
                c.args(["insert", "--keep-going", "--db"]).arg(&db);
                c
            },
            "{\"db\":{\"table\":\"t\",\"values\":{\"a\":\"1\"}}}\n{\"db\":{\"table\":\"nope\",\"values\":{\"a\":\"1\"}}}\n",
        ),
        (
            "elf-commit",
            {
                let mut c = cmd(bin("elf-commit"));
                c.args(["--keep-going", "--repo"]).arg(t.join("repo"));
                c
            },
            "{\"x\":1}\nnot json\n",
        ),
    ];
    for (tool, c, input) in cases {
        let out = run_with_input(c, input.as_bytes());
        assert_eq!(out.status.code(), Some(0), "{tool}: {out:?}");
        let recs = json_lines(&out.stdout);
        assert_eq!(recs.len(), 2, "{tool}: {out:?}");
        assert!(recs[0].get("error").is_none(), "{tool}: {recs:?}");
        assert_eq!(
            recs[1]["error"]["tool"],
            Value::from(tool),
            "{tool}: {recs:?}"
        );
        // The same words in every tool's help.
        assert!(
            help(tool)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains("The exit status is 0 when every failure became an error record"),
            "{tool} --help"
        );
    }
}

#[test]
fn every_tool_takes_the_same_duration_syntax() {
    let t = TempDir::new();
    // Each value is refused by no tool; a bad one is refused by all, with the same words.
    let runs: &[(&str, &[&str])] = &[
        ("elf-write", &["--timeout"]),
        ("elf-db", &["check", "--db", "missing.db", "--busy-timeout"]),
        ("elf-commit", &["--check", "--timeout"]),
        ("elf-backoff", &["--max-time"]),
    ];
    for (tool, args) in runs {
        for value in ["500ms", "2s", "1.5", "1m", "1h", "1d", "x"] {
            let mut c = cmd(bin(tool));
            c.args(*args).arg(value).current_dir(t.path());
            if *tool == "elf-backoff" {
                c.args(["--", "true"]);
            }
            let out = run_with_input(c, b"");
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if value == "x" {
                assert_eq!(out.status.code(), Some(64), "{tool} {value}: {err}");
                assert!(
                    err.contains("expected a number with ms, s, m, h or d"),
                    "{tool}: {err}"
                );
            } else {
                assert!(!err.contains("error parsing flag"), "{tool} {value}: {err}");
            }
        }
    }
}

#[test]
fn the_stream_form_makes_missing_folders_as_the_record_form_does() {
    let t = TempDir::new();
    let out = run_with_input(
        {
            let mut c = cmd(bin("elf-write"));
            c.arg("new/deep/f.txt").current_dir(t.path());
            c
        },
        b"hello\n",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read(t.join("new/deep/f.txt")).expect("written"),
        b"hello\n"
    );
    let out = run_with_input(
        {
            let mut c = cmd(bin("elf-write"));
            c.arg("--root").arg(t.path()).arg("other/g.txt");
            c
        },
        b"x",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(t.join("other/g.txt").is_file());
    // A folder that cannot be made is named as a folder, not a "root folder".
    std::fs::write(t.join("file"), "").expect("file");
    let out = run_with_input(
        {
            let mut c = cmd(bin("elf-write"));
            c.arg("file/x/f.txt").current_dir(t.path());
            c
        },
        b"x",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err, "elf-write: opening folder file/x: Not a directory\n");
}

#[test]
fn help_lists_each_tools_own_exit_statuses() {
    let set =
        |codes: &[&str]| -> BTreeSet<String> { codes.iter().map(|c| c.to_string()).collect() };
    let shared = ["0", "64", "70", "74", "128+N", "141"];
    for tool in TOOLS {
        let listed = listed_exits(tool);
        assert!(set(&shared).is_subset(&listed), "{tool}: {listed:?}");
    }
    // Neither elf-backoff nor elf-lock reads records: no 65. Only elf-db answers a question
    // (check): 1. Only elf-commit meets repositories it cannot work in: 69.
    for tool in ["elf-backoff", "elf-lock"] {
        assert!(!listed_exits(tool).contains("65"), "{tool}");
    }
    for tool in TOOLS {
        assert_eq!(
            listed_exits(tool).contains("1"),
            *tool == "elf-db",
            "{tool}"
        );
        assert_eq!(
            listed_exits(tool).contains("69"),
            *tool == "elf-commit",
            "{tool}"
        );
    }
    // The man page's EXIT STATUS holds the same codes.
    let man = cmd(bin("elf-backoff"))
        .args(["--generate", "man"])
        .output()
        .expect("man");
    let man = String::from_utf8_lossy(&man.stdout);
    let exit = man.split(".SH EXIT STATUS").nth(1).unwrap_or("");
    let exit = exit.split(".SH ").next().unwrap_or("");
    assert!(
        exit.contains(".B 75\n") && !exit.contains(".B 65\n"),
        "{exit}"
    );
}

/// The statuses the constructors and constants in a tool's sources stand for.
fn statuses_in_code(tool: &str) -> BTreeSet<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("crates")
        .join(tool)
        .join("src");
    let io = ["66", "74", "75", "77", "141"];
    let rules: &[(&str, &[&str])] = &[
        ("Error::usage(", &["64"]),
        ("Error::data(", &["65"]),
        ("exit::DATAERR", &["65"]),
        ("record::Reader", &["65"]),
        ("Error::no_input(", &["66"]),
        ("exit::NOINPUT", &["66"]),
        ("exit::UNAVAILABLE", &["69"]),
        ("Error::internal(", &["70"]),
        ("exit::SOFTWARE", &["70"]),
        ("Error::io_failure(", &["74"]),
        ("exit::IOERR", &["74"]),
        ("Error::temporary(", &["75"]),
        ("exit::TEMPFAIL", &["75"]),
        ("Error::permission(", &["77"]),
        ("exit::NOPERM", &["77"]),
        ("Error::io(", &io),
        (".ctx(", &io),
        (".with_ctx(", &io),
        ("Error::signal(", &["128+N"]),
        ("exit::BROKEN_PIPE", &["141"]),
        ("exit::NO,", &["1"]),
        ("exit::NO)", &["1"]),
    ];
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("source");
        // The unit tests at the end are not the tool's code.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (pattern, codes) in rules {
            if code.contains(pattern) {
                found.extend(codes.iter().map(|c| c.to_string()));
            }
        }
        // A status named by number, as in Error::new(69, ...) or `=> 69`.
        for n in ["65", "66", "69", "74", "75", "77"] {
            if code.contains(&format!("Error::new({n}")) {
                found.insert(n.to_string());
            }
        }
    }
    found
}

#[test]
fn every_status_a_tools_code_returns_is_in_its_list() {
    for tool in TOOLS {
        let listed = listed_exits(tool);
        let used = statuses_in_code(tool);
        let missing: Vec<&String> = used.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "{tool} returns {missing:?}, not in its --help list"
        );
    }
}

//! The committed completions (completions/), run by the shells they are for: bash's function
//! called as `complete -F` calls it, fish's `complete -C`, zsh's syntax check. They know each
//! subcommand's flags and operands, offer files for files and commands (once each) for a
//! command line.

use std::path::PathBuf;

use crate::util::{TempDir, cmd};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("completions")
        .join(name)
}

/// A folder with a file and a folder to complete, where the shells run.
fn folder() -> TempDir {
    let t = TempDir::new();
    std::fs::write(t.join("lock.txt"), "").expect("file");
    std::fs::create_dir(t.join("sub")).expect("folder");
    t
}

/// What bash's completion function offers for `words` (the last one is the word under the
/// cursor), sorted.
fn bash(t: &TempDir, words: &[&str]) -> Vec<String> {
    let tool = words[0];
    let out = cmd("bash")
        .args(["--norc", "--noprofile", "-c"])
        .arg(
            "source \"$0\" || exit 3
             COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); COMP_LINE=\"$*\"; COMP_POINT=${#COMP_LINE}
             f=$(complete -p \"$1\") || exit 4
             f=${f#*-F }; ${f%% *}
             printf '%s\\n' \"${COMPREPLY[@]}\"",
        )
        .arg(script(&format!("{tool}.bash")))
        .args(words)
        .env("PATH", "/usr/bin:/bin")
        .current_dir(t.path())
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash {words:?}: {out:?}");
    assert!(out.stderr.is_empty(), "bash {words:?}: {out:?}");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// What fish's `complete -C LINE` offers (the completions without their descriptions), sorted.
fn fish(t: &TempDir, tool: &str, line: &str) -> Vec<String> {
    let out = cmd("fish")
        .arg("--no-config")
        .arg("-c")
        .arg("source $argv[1]; or exit 3; complete -C $argv[2]")
        .arg(script(&format!("{tool}.fish")))
        .arg(line)
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", t.path())
        .env("XDG_CONFIG_HOME", t.join(".config"))
        .env("XDG_DATA_HOME", t.join(".local"))
        .current_dir(t.path())
        .output()
        .expect("run fish");
    assert!(out.status.success(), "fish {line:?}: {out:?}");
    assert!(out.stderr.is_empty(), "fish {line:?}: {out:?}");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

fn strings(words: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    v.sort();
    v
}

const DB_COMMANDS: &[&str] = &[
    "insert",
    "exec",
    "done",
    "pending",
    "retry",
    "drop",
    "query",
    "check",
    "checkpoint",
];

/// The long flags `elf-db query` accepts: its own, the ones every command takes, the common.
const QUERY_FLAGS: &[&str] = &[
    "--db",
    "--busy-timeout",
    "--param",
    "--format",
    "--header",
    "--null",
    "--help",
    "--version",
    "--generate",
];

#[test]
fn bash_elf_db_offers_its_commands_and_each_commands_own_flags() {
    let t = folder();
    assert_eq!(bash(&t, &["elf-db", ""]), strings(DB_COMMANDS));
    // A flag's value is not the command.
    assert_eq!(
        bash(&t, &["elf-db", "--db", "x.db", ""]),
        strings(DB_COMMANDS)
    );
    assert_eq!(
        bash(&t, &["elf-db", "che"]),
        strings(&["check", "checkpoint"])
    );
    assert_eq!(bash(&t, &["elf-db", "query", "--"]), strings(QUERY_FLAGS));
    let insert = bash(&t, &["elf-db", "-d", "x.db", "insert", "--"]);
    for f in ["--journal", "--table", "--schema", "--keep-going", "--db"] {
        assert!(insert.contains(&f.to_string()), "{f} missing: {insert:?}");
    }
    for f in ["--param", "--format", "--older-than", "--attempts"] {
        assert!(!insert.contains(&f.to_string()), "{f} offered: {insert:?}");
    }
    // Values: choices, files, nothing for SQL; `--format=` is three words to bash.
    let formats = strings(&["json", "tsv", "csv"]);
    assert_eq!(bash(&t, &["elf-db", "query", "--format", ""]), formats);
    assert_eq!(bash(&t, &["elf-db", "query", "--format", "=", ""]), formats);
    assert_eq!(
        bash(&t, &["elf-db", "insert", "--schema", ""]),
        strings(&["lock.txt", "sub"])
    );
    assert_eq!(bash(&t, &["elf-db", "query", ""]), Vec::<String>::new());
    assert_eq!(
        bash(
            &t,
            &["elf-db", "query", "--format", "=", "tsv", "SELECT 1", ""]
        ),
        Vec::<String>::new()
    );
}

#[test]
fn bash_elf_lock_completes_the_lock_file_then_a_command_once() {
    let t = folder();
    assert_eq!(bash(&t, &["elf-lock", ""]), strings(&["lock.txt", "sub"]));
    assert_eq!(
        bash(&t, &["elf-lock", "-w", "5", "-n", "l"]),
        strings(&["lock.txt"])
    );
    // After --, and flock-style after the lock file: a command, each name once (compgen -c
    // gives echo as a builtin and from /usr/bin and /bin).
    assert_eq!(bash(&t, &["elf-lock", "x", "--", "ec"]), strings(&["echo"]));
    assert_eq!(bash(&t, &["elf-lock", "x", "ec"]), strings(&["echo"]));
    assert_eq!(
        bash(&t, &["elf-lock", "a", "b", "--", "ec"]),
        strings(&["echo"])
    );
    // The command's arguments: files, without bash-completion's _command_offset.
    assert_eq!(
        bash(&t, &["elf-lock", "x", "--", "echo", ""]),
        strings(&["lock.txt", "sub"])
    );
    let flags = bash(&t, &["elf-lock", "--s"]);
    assert_eq!(flags, strings(&["--shared", "--stale-after", "--status"]));
    // Past the lock file, a dash starts the command's words, not elf-lock's flags.
    assert_eq!(bash(&t, &["elf-lock", "x", "--sh"]), Vec::<String>::new());
}

#[test]
fn bash_the_other_tools_complete_their_operands_and_values() {
    let t = folder();
    assert_eq!(
        bash(&t, &["elf-backoff", "-n", "3", "ec"]),
        strings(&["echo"])
    );
    assert_eq!(
        bash(&t, &["elf-backoff", "--jitter", ""]),
        strings(&["full", "equal", "decorrelated", "none"])
    );
    assert_eq!(bash(&t, &["elf-write", "l"]), strings(&["lock.txt"]));
    assert_eq!(
        bash(&t, &["elf-write", "--root", ""]),
        strings(&["lock.txt", "sub"])
    );
    assert_eq!(bash(&t, &["elf-write", "x", ""]), Vec::<String>::new());
    assert_eq!(
        bash(&t, &["elf-commit", "-m", "msg", "--", "a", "l"]),
        strings(&["lock.txt"])
    );
    assert!(bash(&t, &["elf-commit", "--ke"]).contains(&"--keep-going".to_string()));
}

#[test]
fn fish_knows_commands_flags_values_and_command_lines() {
    let t = folder();
    assert_eq!(fish(&t, "elf-db", "elf-db "), strings(DB_COMMANDS));
    assert_eq!(
        fish(&t, "elf-db", "elf-db --db x.db "),
        strings(DB_COMMANDS)
    );
    assert_eq!(fish(&t, "elf-db", "elf-db query --"), strings(QUERY_FLAGS));
    assert_eq!(
        fish(&t, "elf-db", "elf-db query --format "),
        strings(&["json", "tsv", "csv"])
    );
    assert_eq!(fish(&t, "elf-db", "elf-db query "), Vec::<String>::new());
    assert_eq!(
        fish(&t, "elf-lock", "elf-lock "),
        strings(&["lock.txt", "sub/"])
    );
    assert_eq!(fish(&t, "elf-lock", "elf-lock x -- ec"), strings(&["echo"]));
    assert_eq!(fish(&t, "elf-lock", "elf-lock x ec"), strings(&["echo"]));
    assert_eq!(
        fish(&t, "elf-lock", "elf-lock a b -- ec"),
        strings(&["echo"])
    );
    assert_eq!(
        fish(&t, "elf-lock", "elf-lock x -- echo l"),
        strings(&["lock.txt"])
    );
    assert_eq!(
        fish(&t, "elf-backoff", "elf-backoff ec"),
        strings(&["echo"])
    );
    assert_eq!(fish(&t, "elf-write", "elf-write l"), strings(&["lock.txt"]));
}

#[test]
fn zsh_scripts_parse() {
    for tool in [
        "elf-backoff",
        "elf-lock",
        "elf-write",
        "elf-db",
        "elf-commit",
    ] {
        let out = cmd("zsh")
            .arg("-n")
            .arg(script(&format!("_{tool}")))
            .output()
            .expect("run zsh");
        assert!(out.status.success(), "_{tool}: {out:?}");
    }
}

//! The generated man pages and completions are committed; these tests fail when they are stale.
//! Run with `ELF_BLESS=1` to rewrite them.

use std::path::{Path, PathBuf};

use crate::util::cmd;

/// Every tool of the toolkit.
const TOOLS: &[&str] = &[
    "elf-backoff",
    "elf-lock",
    "elf-write",
    "elf-db",
    "elf-commit",
];

#[test]
fn the_tool_list_is_every_tool_crate() {
    let mut crates: Vec<String> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "elf-core")
        .collect();
    crates.sort();
    let mut tools: Vec<String> = TOOLS.iter().map(|t| t.to_string()).collect();
    tools.sort();
    assert_eq!(crates, tools);
}

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/tests-HASH -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents a tool generates and where each is committed.
fn outputs(tool: &str) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("man", root().join("man").join(format!("{tool}.1"))),
        (
            "complete-bash",
            root().join("completions").join(format!("{tool}.bash")),
        ),
        (
            "complete-zsh",
            root().join("completions").join(format!("_{tool}")),
        ),
        (
            "complete-fish",
            root().join("completions").join(format!("{tool}.fish")),
        ),
    ]
}

#[test]
fn generated_docs_are_fresh() {
    let bless = std::env::var_os("ELF_BLESS").is_some();
    let mut stale = Vec::new();
    let mut checked = 0;
    for tool in TOOLS {
        let bin = bin_dir().join(tool);
        assert!(bin.exists(), "{tool} has no binary at {}", bin.display());
        for (kind, path) in outputs(tool) {
            let out = cmd(&bin)
                .args(["--generate", kind])
                .output()
                .expect("run --generate");
            assert!(out.status.success(), "{tool} --generate {kind} failed");
            let committed = std::fs::read(&path).unwrap_or_default();
            if committed != out.stdout {
                if bless {
                    std::fs::write(&path, &out.stdout).expect("bless");
                } else {
                    stale.push(path.display().to_string());
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, TOOLS.len() * 4, "not every output was checked");
    assert!(
        stale.is_empty(),
        "stale generated files (rerun with ELF_BLESS=1): {stale:?}"
    );
}

#[test]
fn every_tool_answers_help_and_version() {
    for tool in TOOLS {
        let bin = bin_dir().join(tool);
        assert!(bin.exists(), "{tool} has no binary at {}", bin.display());
        let v = cmd(&bin).arg("--version").output().expect("run --version");
        assert!(v.status.success());
        assert_eq!(
            String::from_utf8_lossy(&v.stdout),
            format!("{tool} {}\n", env!("CARGO_PKG_VERSION"))
        );
        for flag in ["-h", "--help"] {
            let h = cmd(&bin).arg(flag).output().expect("run help");
            assert!(h.status.success());
            let text = String::from_utf8_lossy(&h.stdout);
            assert!(
                text.starts_with(&format!("{tool} ")),
                "{tool} {flag}: {text}"
            );
            assert!(
                text.contains("--version"),
                "{tool} {flag} lists no --version"
            );
        }
        let bad = cmd(&bin)
            .arg("--no-such-flag")
            .output()
            .expect("run bad flag");
        assert_eq!(bad.status.code(), Some(64));
        assert_eq!(
            String::from_utf8_lossy(&bad.stderr),
            format!("{tool}: unknown flag --no-such-flag (see --help)\n")
        );
    }
}

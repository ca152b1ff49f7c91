//! The examples of the README and the man pages run as written, so that they stay true.
//!
//! An example is every ```` ```sh ```` block of README.md and every `.nf`/`.EX` block of a man
//! page's EXAMPLES section (read from the generated `man/*.1`). Each runs in a fresh folder
//! (`bash -e -o pipefail`, the tools of this build first on PATH, HOME a fresh folder too) and
//! must exit 0. Directives just above a block, in an HTML comment (`<!-- example: ... -->`) in
//! the README or a roff comment (`.\" example: ...`) in a man page, neither of them shown to a
//! reader, say what the reader's situation is:
//!
//! - `setup SHELL`: run first (the text the block describes, such as "in a git repository"),
//!   with the helpers below and `$ELF_SRC`, the checkout;
//! - `stdout LINE`: the block prints that line (among others);
//! - `file NAME` (above a block of another language, such as ```` ```json ````): that block is
//!   the file NAME of the example just before it (JSON values are written one a line);
//! - `skip REASON`: not run (a build, an install, a benchmark), with the reason.
//!
//! Setup helpers: `elf_repo` (a git repository with `memory/failures/`, `memory/heuristics/`
//! and `memory/index.db` with the ELF tables), `elf_records` (prints one record with db, write
//! and commit keys), `elf_commands NAME...` (stand-ins for the reader's own commands on PATH).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::elf_home::{bin_dir, root};
use crate::util::{TempDir, cmd, run_with_input_within};

#[derive(Debug, Default)]
struct Example {
    /// `FILE:LINE` of the block's first line.
    place: String,
    code: String,
    setup: Vec<String>,
    stdout: Vec<String>,
    files: Vec<(String, String)>,
    skip: Option<String>,
}

const PRELUDE: &str = r##"
elf_repo() {
    git init -q . && mkdir -p memory/failures memory/heuristics &&
        sqlite3 memory/index.db < "$ELF_SRC/bin-wrappers/lib/schema.sql"
}
elf_records() {
    printf '%s\n' '{"key":"r1","db":{"table":"learnings","values":{"type":"failure","title":"t","filepath":"memory/failures/t.md"}},"write":{"path":"memory/failures/t.md","mode":"create","content":"# t\n"},"commit":{"message":"failure: t"}}'
}
elf_commands() {
    mkdir -p "$HOME/bin"
    for c in "$@"; do
        printf '#!/bin/sh\necho "%s done"\n' "$c" > "$HOME/bin/$c" && chmod +x "$HOME/bin/$c"
    done
    export PATH="$HOME/bin:$PATH"
}
"##;

/// Applies one directive to the example being built, or to the last one (`file`).
fn directive(text: &str, pending: &mut Example, place: &str) {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim().to_string();
    match word {
        "setup" => pending.setup.push(rest),
        "stdout" => pending.stdout.push(rest),
        "skip" => pending.skip = Some(rest),
        "file" => pending.files.push((rest, String::new())),
        _ => panic!("{place}: unknown example directive {text:?}"),
    }
}

/// The README's examples.
fn readme_examples() -> Vec<Example> {
    let text = std::fs::read_to_string(root().join("README.md")).expect("README");
    let mut out: Vec<Example> = Vec::new();
    let mut pending = Example::default();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let place = format!("README.md:{}", n + 1);
        if let Some(d) = line
            .strip_prefix("<!-- example: ")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            directive(d, &mut pending, &place);
            continue;
        }
        if let Some(lang) = line.strip_prefix("```").filter(|l| !l.is_empty()) {
            let mut body = String::new();
            for (_, l) in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            let mut ex = std::mem::take(&mut pending);
            if lang == "sh" {
                assert!(ex.files.is_empty(), "{place}: file directive on a sh block");
                ex.place = format!("README.md:{}", n + 2);
                ex.code = body;
                out.push(ex);
            } else if let Some((name, _)) = ex.files.pop() {
                let last = out
                    .last_mut()
                    .unwrap_or_else(|| panic!("{place}: a file with no example before it"));
                last.files.push((name, body));
            }
            continue;
        }
        assert!(
            pending.setup.is_empty() && pending.stdout.is_empty() && pending.skip.is_none(),
            "{place}: example directives not followed by a block"
        );
    }
    out
}

/// Roff text of an example as a reader sees it.
fn unroff(line: &str) -> String {
    line.replace("\\(aq", "'")
        .replace("\\(dq", "\"")
        .replace("\\-", "-")
        .replace("\\&", "")
        .replace("\\e", "\\")
}

/// The examples of a generated man page's EXAMPLES section.
fn man_examples(page: &Path) -> Vec<Example> {
    let name = format!("man/{}", page.file_name().expect("name").to_string_lossy());
    let text = std::fs::read_to_string(page).expect("man page");
    let mut out = Vec::new();
    let mut pending = Example::default();
    let mut in_examples = false;
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let place = format!("{name}:{}", n + 1);
        if line.starts_with(".SH ") {
            in_examples = line == ".SH EXAMPLES";
            continue;
        }
        if !in_examples {
            continue;
        }
        if let Some(d) = line.strip_prefix(".\\\" example: ") {
            directive(&unroff(d), &mut pending, &place);
            continue;
        }
        if line == ".nf" || line == ".EX" {
            let mut body = String::new();
            for (_, l) in lines.by_ref() {
                if l == ".fi" || l == ".EE" {
                    break;
                }
                if l.starts_with(".RS") || l.starts_with(".RE") {
                    continue;
                }
                body.push_str(&unroff(l));
                body.push('\n');
            }
            let mut ex = std::mem::take(&mut pending);
            ex.place = format!("{name}:{}", n + 2);
            ex.code = body;
            out.push(ex);
        }
    }
    assert!(!out.is_empty(), "{name} has no examples");
    out
}

fn all_examples() -> Vec<Example> {
    let mut all = readme_examples();
    let mut pages: Vec<_> = std::fs::read_dir(root().join("man"))
        .expect("man/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 5, "man pages: {pages:?}");
    for p in pages {
        all.extend(man_examples(&p));
    }
    all
}

/// Runs one example in a fresh folder; returns why it failed.
fn run(ex: &Example) -> Result<(), String> {
    let dir = TempDir::new();
    // The folder is inside a scratch repository, so elf-write keeps its locks there.
    let git = Command::new("git")
        .args(["init", "-q"])
        .arg(dir.path())
        .output()
        .expect("git init");
    assert!(git.status.success());
    let work = dir.join("work");
    let home = dir.join("home");
    let tmp = dir.join("tmp");
    for d in [&work, &home, &tmp] {
        std::fs::create_dir(d).expect("folder");
    }
    for (name, body) in &ex.files {
        let content = if name.ends_with(".jsonl") {
            serde_json::Deserializer::from_str(body)
                .into_iter::<serde_json::Value>()
                .map(|v| format!("{}\n", v.expect("the file's JSON")))
                .collect()
        } else {
            body.clone()
        };
        std::fs::write(work.join(name), content).expect("example file");
    }
    let mut script = String::from("set -e -o pipefail\n");
    script.push_str(PRELUDE);
    for s in &ex.setup {
        script.push_str(s);
        script.push('\n');
    }
    script.push_str(&ex.code);
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = cmd("bash");
    c.current_dir(&work)
        .env("PATH", path)
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .env("ELF_SRC", root())
        .env("GIT_AUTHOR_NAME", "Example")
        .env("GIT_AUTHOR_EMAIL", "example@example.org")
        .env("GIT_COMMITTER_NAME", "Example")
        .env("GIT_COMMITTER_EMAIL", "example@example.org")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", &script]);
    let out = run_with_input_within(c, b"", Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = || {
        format!(
            "{}: status {:?}\n--- code\n{}--- stdout\n{}--- stderr\n{}",
            ex.place,
            out.status.code(),
            ex.code,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    if !out.status.success() {
        return Err(report());
    }
    for want in &ex.stdout {
        if !stdout.lines().any(|l| l == want) {
            return Err(format!("expected the line {want:?}\n{}", report()));
        }
    }
    Ok(())
}

#[test]
fn every_example_of_the_readme_and_the_man_pages_runs() {
    let all = all_examples();
    let run_ones: Vec<&Example> = all.iter().filter(|e| e.skip.is_none()).collect();
    for e in all.iter().filter(|e| e.skip.is_some()) {
        assert!(
            !e.skip.as_deref().unwrap_or("").is_empty(),
            "{}: skip without a reason",
            e.place
        );
    }
    assert!(
        run_ones.len() >= 20,
        "only {} examples found",
        run_ones.len()
    );
    let failures: Vec<String> = run_ones.iter().filter_map(|e| run(e).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} examples failed:\n\n{}",
        failures.len(),
        run_ones.len(),
        failures.join("\n\n")
    );
}

/// The extractor finds the blocks and their directives (so that a block cannot silently
/// drop out of the run above).
#[test]
fn the_extractor_sees_every_block_and_directive() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let sh_blocks = readme.lines().filter(|l| *l == "```sh").count();
    let ex = readme_examples();
    assert_eq!(ex.len(), sh_blocks);
    let pipeline = ex
        .iter()
        .find(|e| e.code.contains("elf-db exec --key fix"))
        .expect("the record protocol's pipeline");
    assert_eq!(pipeline.files.len(), 1);
    assert_eq!(pipeline.files[0].0, "records.jsonl");
    let page = man_examples(&root().join("man/elf-db.1"));
    assert!(
        page.iter()
            .any(|e| e.code.contains("while IFS=$'\\t' read -r id path; do")),
        "roff escapes are undone: {page:#?}"
    );
    // A failing example is reported, not passed.
    let bad = Example {
        place: "test".into(),
        code: "false | cat\n".into(),
        ..Example::default()
    };
    assert!(run(&bad).is_err());
    let missing = Example {
        place: "test".into(),
        code: "echo one\n".into(),
        stdout: vec!["two".into()],
        ..Example::default()
    };
    assert!(run(&missing).is_err());
}

/// The fuzz targets the README names exist, each with a binary and seeds.
#[test]
fn every_fuzz_target_has_seeds() {
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).expect("fuzz manifest");
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let mut targets: Vec<String> = std::fs::read_dir(root().join("fuzz/fuzz_targets"))
        .expect("fuzz_targets")
        .map(|e| e.expect("entry").path())
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    targets.sort();
    assert!(targets.len() >= 7, "{targets:?}");
    for t in &targets {
        assert!(
            manifest.contains(&format!("name = \"{t}\"")),
            "{t}: no [[bin]]"
        );
        assert!(readme.contains(&format!("`{t}`")), "{t}: not in the README");
        let seeds = std::fs::read_dir(root().join("fuzz/seeds").join(t))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(seeds > 0, "{t}: no seeds in fuzz/seeds/{t}");
    }
}

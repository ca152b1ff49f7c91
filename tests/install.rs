//! install.sh: the README's install command, run into a temporary HOME (its `~/.local` prefix
//! and ELF home) with the binaries of this build, installs everything in folders that did not
//! exist, and what it installed runs: the tools, the completions, the scripts through their
//! links, query.py through python3.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::elf_home::{bin_dir, root};
use crate::util::{TempDir, cmd, ok, one_line};

const TOOLS: &[&str] = &[
    "elf-lock",
    "elf-write",
    "elf-db",
    "elf-commit",
    "elf-backoff",
];

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run")
}

/// PATH with the prefix's bin/ first and without this build's target folder.
fn path_with(prefix_bin: &Path) -> String {
    let system = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let build = bin_dir();
    let kept: Vec<&str> = system
        .split(':')
        .filter(|p| Path::new(p) != build.as_path())
        .collect();
    format!("{}:{}", prefix_bin.display(), kept.join(":"))
}

/// The README's per-user install line (`./install.sh --prefix ~/.local --query-py`).
fn readme_install_line() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let line = readme
        .lines()
        .skip_while(|l| *l != "## Installing")
        .find(|l| l.starts_with("./install.sh --prefix"))
        .expect("README's install block has a ./install.sh --prefix line");
    line.split(" #").next().unwrap_or(line).trim().to_string()
}

#[test]
fn the_readme_install_command_installs_into_a_fresh_prefix_and_home() {
    let dir = TempDir::new();
    let home = dir.join("home");
    std::fs::create_dir(&home).expect("home");
    let line = readme_install_line();
    assert!(line.contains("~/.local"), "{line}");
    // Twice: a second install over the first works too.
    for _ in 0..2 {
        let mut c = cmd("bash");
        c.current_dir(root()).env("HOME", &home).args([
            "-euc",
            &format!("{line} --bin-dir \"$1\""),
            "install",
            bin_dir().to_str().expect("UTF-8 target path"),
        ]);
        let out = run(c);
        ok(&out);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("installed elf-tools into {}/.local\n", home.display())
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let prefix = home.join(".local");
    let share = prefix.join("share");
    for t in TOOLS {
        let bin = prefix.join("bin").join(t);
        assert_eq!(
            std::fs::read(&bin).expect("installed tool"),
            std::fs::read(bin_dir().join(t)).expect("built tool"),
            "{t}"
        );
        let out = run({
            let mut c = cmd(&bin);
            c.arg("--version");
            c
        });
        ok(&out);
        let pairs = [
            (format!("man/{t}.1"), share.join(format!("man/man1/{t}.1"))),
            (
                format!("completions/{t}.bash"),
                share.join(format!("bash-completion/completions/{t}")),
            ),
            (
                format!("completions/_{t}"),
                share.join(format!("zsh/site-functions/_{t}")),
            ),
            (
                format!("completions/{t}.fish"),
                share.join(format!("fish/vendor_completions.d/{t}.fish")),
            ),
        ];
        for (from, to) in pairs {
            assert_eq!(
                std::fs::read(root().join(&from)).expect("source"),
                std::fs::read(&to).unwrap_or_else(|e| panic!("{}: {e}", to.display())),
                "{from}"
            );
        }
        // bash-completion loads a completion by the command's name.
        let mut c = cmd("bash");
        c.args([
            "-c",
            "source \"$1\" && complete -p \"$2\"",
            "bash",
            share
                .join(format!("bash-completion/completions/{t}"))
                .to_str()
                .expect("UTF-8"),
            t,
        ]);
        let out = run(c);
        ok(&out);
        assert!(
            String::from_utf8_lossy(&out.stdout).ends_with(&format!(" {t}\n")),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let path = path_with(&prefix.join("bin"));
    // The scripts run through their links in bin/, with the installed tools only.
    let elf = home.join(".claude/emergent-learning");
    let mut c = cmd(prefix.join("bin/record-failure.sh"));
    c.env("HOME", &home).env("PATH", &path).args([
        "--title",
        "Installed",
        "--domain",
        "setup",
        "--severity",
        "2",
    ]);
    let out = run(c);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Failure recorded successfully!"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(elf.join("memory/index.db").is_file());
    let mut c = cmd(prefix.join("bin/query.sh"));
    c.env("HOME", &home)
        .env("PATH", &path)
        .args(["--recent", "5"]);
    let out = run(c);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Installed"));
    // query.py in the ELF home reaches the installed query-py.sh.
    let installed = elf.join("query/query.py");
    assert!(installed.is_file());
    if Command::new("python3")
        .arg("-c")
        .arg("pass")
        .output()
        .is_err()
    {
        eprintln!("skipped: no python3 for query.py");
        return;
    }
    let mut c = cmd("python3");
    c.env("HOME", &home)
        .env("PATH", &path)
        .arg(&installed)
        .args(["--recent", "5"]);
    let out = run(c);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Installed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn install_refuses_bad_usage_and_a_missing_binary_folder() {
    let dir = TempDir::new();
    let mut c = cmd("bash");
    c.arg(root().join("install.sh")).arg("--no-such-flag");
    let out = run(c);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        one_line(&out.stderr),
        "install.sh: unknown argument '--no-such-flag' (see --help)"
    );
    let mut c = cmd("bash");
    c.arg(root().join("install.sh"))
        .arg("--prefix")
        .arg(dir.join("p"))
        .arg("--bin-dir")
        .arg(dir.join("nothing"));
    let out = run(c);
    assert_eq!(out.status.code(), Some(66));
    assert!(one_line(&out.stderr).contains("nothing/elf-lock: not found"));
    assert!(!dir.join("p").exists(), "nothing is installed on failure");
    let mut c = cmd("bash");
    c.arg(root().join("install.sh")).arg("--help");
    let out = run(c);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Usage: ./install.sh"));
}

//! No litter: the ELF scripts, on success and on failure, leave nothing in the temporary
//! folder (TMPDIR, which mktemp and the tools would use) and keep their lock files in the
//! home's git folder, never in `/tmp/elf-write-UID/`.

use std::path::Path;

use crate::elf_home::{ok, run, script};
use crate::util::TempDir;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_scripts_leave_nothing_in_the_temporary_folder() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    let with_tmp = |name: &str, args: &[&str]| {
        let mut c = script(name, &home);
        c.env("TMPDIR", &tmp).args(args);
        run(c)
    };
    let failure = ["--title", "T", "--domain", "d", "--severity", "2"];
    ok(&with_tmp("record-failure.sh", &failure));
    ok(&with_tmp("record-failure.sh", &failure));
    ok(&with_tmp(
        "record-heuristic.sh",
        &["--domain", "d", "--rule", "r", "--explanation", "e"],
    ));
    ok(&with_tmp(
        "start-experiment.sh",
        &["--name", "N", "--hypothesis", "h"],
    ));
    ok(&with_tmp("query.sh", &["--context"]));
    ok(&with_tmp("query-py.sh", &["--context"]));
    ok(&with_tmp("sync-db-markdown.sh", &["--fix"]));
    // Failures: a bad value (65) and a bad flag (64) stop before anything is written.
    let bad = with_tmp(
        "record-failure.sh",
        &["--title", "T", "--domain", "d", "--severity", "9"],
    );
    assert_eq!(bad.status.code(), Some(65));
    let bad = with_tmp("record-heuristic.sh", &["--no-such-flag"]);
    assert_eq!(bad.status.code(), Some(64));
    // A file edited behind the index's back: sync reports it (1) and --fix repairs it.
    std::fs::write(home.join("memory/failures/stray.md"), "# stray\n").expect("stray");
    let diff = with_tmp("sync-db-markdown.sh", &[]);
    assert_eq!(diff.status.code(), Some(1));
    ok(&with_tmp("sync-db-markdown.sh", &["--fix"]));
    assert_eq!(entries(&tmp), Vec::<String>::new(), "left in TMPDIR");
    assert!(
        !entries(&home.join(".git/elf-write-locks")).is_empty(),
        "elf-write's locks are in the home's git folder"
    );
}

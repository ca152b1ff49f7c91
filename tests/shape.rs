//! The shape of the codebase, checked: every folder under crates/ is a crate, no tool's
//! modules import each other in a circle, the fuzz targets use the libraries, and each text
//! written in more than one place says the same everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The source of a module without its comment lines.
fn code(path: &Path) -> String {
    fs::read_to_string(path)
        .expect("read source")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_folder_under_crates_is_a_crate_with_a_library() {
    let dirs = crate_dirs();
    assert!(dirs.len() >= 6, "crates/ holds {dirs:?}");
    for dir in dirs {
        assert!(
            dir.join("Cargo.toml").is_file(),
            "{} has no Cargo.toml",
            dir.display()
        );
        assert!(
            dir.join("src/lib.rs").is_file(),
            "{} has no src/lib.rs",
            dir.display()
        );
        assert!(
            !dir.join("src/main.rs").exists(),
            "{}: the binary belongs in the root package's src/bin",
            dir.display()
        );
    }
}

#[test]
fn the_binaries_are_thin() {
    for entry in fs::read_dir(root().join("src/bin")).expect("src/bin") {
        let path = entry.expect("entry").path();
        let lines = code(&path).lines().filter(|l| !l.trim().is_empty()).count();
        assert!(lines <= 12, "{} has {lines} lines of code", path.display());
    }
}

/// The modules of a crate each module names with `crate::m` or `use crate::{m, ...}`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeSet::new();
    for entry in fs::read_dir(src).expect("src/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let stem = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            if stem != "lib" {
                modules.insert(stem);
            }
        }
    }
    let mut graph = BTreeMap::new();
    for m in &modules {
        let text = code(&src.join(format!("{m}.rs")));
        let mut deps = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').collect()
            } else {
                vec![rest]
            };
            for name in names {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) && name != *m {
                    deps.insert(name);
                }
            }
        }
        graph.insert(m.clone(), deps);
    }
    graph
}

/// A cycle in `graph`, as the path that closes it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in &graph[node] {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycle(&g),
        Some(
            vec!["a", "b", "c", "a"]
                .into_iter()
                .map(String::from)
                .collect()
        )
    );
    g.insert("c".to_string(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
}

#[test]
fn no_crate_has_a_module_cycle() {
    for dir in crate_dirs() {
        let graph = module_graph(&dir.join("src"));
        if let Some(c) = cycle(&graph) {
            panic!(
                "{}: modules import each other in a circle: {}",
                dir.display(),
                c.join(" -> ")
            );
        }
    }
}

#[test]
fn fuzz_targets_use_the_libraries() {
    let dir = root().join("fuzz/fuzz_targets");
    for entry in fs::read_dir(&dir).expect("fuzz targets") {
        let path = entry.expect("entry").path();
        let text = fs::read_to_string(&path).expect("read target");
        assert!(
            !text.contains("#[path"),
            "{} includes a module by path",
            path.display()
        );
    }
}

/// The text between `<!-- start -->` and `<!-- end -->` in the README.
fn readme_block(readme: &str, start: &str, end: &str) -> (usize, usize) {
    let a = readme
        .find(start)
        .unwrap_or_else(|| panic!("README has no {start}"))
        + start.len();
    let b = readme[a..]
        .find(end)
        .unwrap_or_else(|| panic!("README has no {end}"))
        + a;
    (a, b)
}

/// Checks that the README's block holds `expected`, or rewrites it under `ELF_BLESS`.
fn readme_agrees(start: &str, end: &str, expected: &str) {
    let path = root().join("README.md");
    let readme = fs::read_to_string(&path).expect("README");
    let (a, b) = readme_block(&readme, start, end);
    if readme[a..b] == *expected {
        return;
    }
    if std::env::var_os("ELF_BLESS").is_some() {
        fs::write(&path, format!("{}{expected}{}", &readme[..a], &readme[b..])).expect("bless");
        return;
    }
    panic!(
        "README between {start} and {end} differs from its source (rerun with ELF_BLESS=1):\n{}\n---\n{expected}",
        &readme[a..b]
    );
}

#[test]
fn the_readme_exit_table_is_exit_table() {
    let mut rows = String::from("\n| code | meaning |\n|---|---|\n");
    for (code, meaning) in elf_core::exit::TABLE {
        rows.push_str(&format!("| {code} | {meaning} |\n"));
    }
    readme_agrees(
        "<!-- exit table: a copy of elf_core::exit::TABLE, checked by a test -->",
        "<!-- /exit table -->",
        &rows,
    );
}

#[test]
fn the_readme_record_protocol_is_the_protocol() {
    readme_agrees(
        "<!-- protocol -->\n",
        "<!-- /protocol -->",
        elf_core::record::PROTOCOL,
    );
}

#[test]
fn the_readme_says_the_bash_the_scripts_need() {
    // The scripts use EPOCHREALTIME (bash 5.0) and SRANDOM (bash 5.1).
    let readme = fs::read_to_string(root().join("README.md")).expect("README");
    assert!(
        readme.contains("`bash` 5.1 or later"),
        "README names another bash"
    );
    assert!(!readme.contains("bash` 4.4"));
}

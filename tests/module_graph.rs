//! The module graph of `src/` has no cycles, and no module imports everything of another with
//! `use super::*` (test modules aside). A cycle hides which way a dependency should point:
//! rules belong in `rotation/`, I/O in `controller/`, and neither may lean on the other both ways.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → `crate`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod")
        .collect();
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => "crate".into(),
        _ => parts.join("::"),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a file up to its `#[cfg(test)]` module, without comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module paths a file refers to: `crate::a::b`, `super::x` in `use` items and in code.
fn references(module: &str, code: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let parent = module.rsplit_once("::").map_or("crate", |(p, _)| p);
    // Re-exports and module declarations are how a parent exposes its children, not imports.
    let statements = code.split(';').filter(|s| {
        let s = s.trim_start();
        !(s.starts_with("pub use") || s.starts_with("mod ") || s.starts_with("pub mod "))
    });
    for statement in statements {
        let flat: String = statement.split_whitespace().collect::<Vec<_>>().join(" ");
        for (prefix, base) in [("crate::", None), ("super::", Some(parent))] {
            let mut rest = flat.as_str();
            while let Some(i) = rest.find(prefix) {
                let before = rest[..i].chars().last();
                rest = &rest[i + prefix.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let path = path.trim_end_matches(':');
                refs.push(match base {
                    None => path.to_string(),
                    Some("crate") => path.to_string(),
                    Some(p) => format!("{p}::{path}"),
                });
            }
        }
    }
    refs
}

/// The longest known module that `path` starts with.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Every module of `src/`, the modules each refers to, and those that glob-import a parent.
struct Graph {
    modules: BTreeSet<String>,
    edges: BTreeMap<String, BTreeSet<String>>,
    globs: Vec<String>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let files: Vec<(String, String)> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|f| (module_of(&src, f), code(&fs::read_to_string(f).unwrap())))
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();

    let mut globs = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &files {
        if code.contains("use super::*") {
            globs.push(module.clone());
        }
        for target in references(module, code) {
            if let Some(t) = resolve(&target, &modules).filter(|t| t != module) {
                edges.entry(module.clone()).or_default().insert(t);
            }
        }
    }
    Graph {
        modules,
        edges,
        globs,
    }
}

#[test]
fn src_has_no_import_cycles_and_no_glob_imports_of_a_parent() {
    let Graph {
        modules,
        edges,
        globs,
    } = graph();
    assert!(
        globs.is_empty(),
        "`use super::*` outside tests in {globs:?}"
    );
    assert!(
        edges["controller::steps::reconcile"].contains("rotation"),
        "the scanner sees imports: {edges:?}"
    );

    // Any cycle shows up as a path from a module back to itself.
    let mut cycles = Vec::new();
    for start in &modules {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    cycles.push(format!("{} → {start}", path.join(" → ")));
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_scanner_finds_a_planted_cycle() {
    let modules: BTreeSet<String> = ["a", "a::b", "c"].map(String::from).into();
    let refs = references(
        "a::b",
        "use super::x;\nfn f() { crate::c::g(); }\npub use crate::a;",
    );
    let resolved: BTreeSet<_> = refs.iter().filter_map(|r| resolve(r, &modules)).collect();
    assert_eq!(resolved, ["a", "c"].map(String::from).into());
}

/// The part of the program a module belongs to: a top-level module, or one of the
/// controller's three rooms.
fn unit_of(module: &str) -> String {
    let parts: Vec<&str> = module.split("::").collect();
    match parts.as_slice() {
        ["controller", room, ..] => format!("controller::{room}"),
        [first, ..] => first.to_string(),
        [] => "crate".into(),
    }
}

/// Which parts may use which: the table docs/architecture.md shows. An import not listed
/// fails, and so does a listed one no longer made (the table stays exact).
const ALLOWED: &[(&str, &[&str])] = &[
    // Entry points: the command line builds the controller's plain Config and runs commands.
    ("crate", &[]),
    (
        "cli",
        &[
            "api",
            "conditions",
            "controller",
            "inputs_key",
            "leader",
            "provider",
            "rotation",
            "secrets",
            "telemetry",
        ],
    ),
    ("controller", &[]),
    // The controller's three rooms, one way: runtime → steps → caches.
    (
        "controller::runtime",
        &[
            "api",
            "controller::caches",
            "controller::steps",
            "inputs_key",
            "leader",
            "provider",
            "rotation",
            "telemetry",
        ],
    ),
    (
        "controller::steps",
        &[
            "api",
            "conditions",
            "controller::caches",
            "digest",
            "leader",
            "provider",
            "rotation",
            "secrets",
            "state",
            "target",
            "telemetry",
        ],
    ),
    (
        "controller::caches",
        &["api", "by_namespace", "rotation", "secrets", "target"],
    ),
    // The pure rules, and what they read.
    (
        "rotation",
        &["api", "conditions", "digest", "provider", "state", "target"],
    ),
    ("leader", &["rotation"]),
    ("inputs_key", &["api", "digest", "secrets"]),
    (
        "secrets",
        &["api", "provider", "rotation", "state", "target"],
    ),
    ("target", &["api", "digest", "provider", "template"]),
    ("template", &["provider"]),
    ("digest", &["api", "provider"]),
    (
        "telemetry",
        &["api", "by_namespace", "conditions", "leader", "provider"],
    ),
    ("api", &["provider"]),
    ("provider", &[]),
    ("state", &[]),
    ("conditions", &[]),
    ("by_namespace", &[]),
];

#[test]
fn imports_between_parts_are_exactly_the_documented_table() {
    let Graph { modules, edges, .. } = graph();
    let parts: BTreeSet<String> = modules.iter().map(|m| unit_of(m)).collect();
    let listed: BTreeSet<String> = ALLOWED.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        parts, listed,
        "every part of src/ has a row in the table (a new module is placed in it)"
    );
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &edges {
        for to in tos {
            let (a, b) = (unit_of(from), unit_of(to));
            if a != b && a != "crate" {
                actual.entry(a).or_default().insert(b);
            }
        }
    }
    let allowed: BTreeMap<String, BTreeSet<String>> = ALLOWED
        .iter()
        .map(|(from, tos)| {
            (
                from.to_string(),
                tos.iter().map(|t| t.to_string()).collect(),
            )
        })
        .filter(|(_, tos): &(String, BTreeSet<String>)| !tos.is_empty())
        .collect();
    let table: String = actual
        .iter()
        .map(|(from, tos)| {
            let tos: Vec<String> = tos.iter().map(|t| format!("{t:?}")).collect();
            format!("    ({from:?}, &[{}]),\n", tos.join(", "))
        })
        .collect();
    assert_eq!(
        actual, allowed,
        "imports between parts differ from the table; the imports made now:\n{table}"
    );
}

/// The functions of `text` (outside its tests) longer than `limit` lines: name and length.
/// A function runs from its `fn` line to the first line that closes it at the same indent.
fn long_functions(text: &str, limit: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .collect();
    let mut long = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let signature = trimmed
            .trim_start_matches("pub ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("async ");
        let Some(rest) = signature.strip_prefix("fn ") else {
            i += 1;
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", " ".repeat(indent));
        let end = (i..lines.len()).find(|&j| lines[j] == close || (j == i && line.ends_with(';')));
        let Some(end) = end else { break };
        if end + 1 - i > limit {
            long.push((name, end + 1 - i));
        }
        i = end + 1;
    }
    long
}

#[test]
fn no_function_in_the_controller_is_over_80_lines() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controller");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let long: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = fs::read_to_string(f).unwrap();
            long_functions(&text, 80)
                .into_iter()
                .map(move |(name, n)| format!("{}: {name} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these:\n{}", long.join("\n"));
}

#[test]
fn the_length_check_sees_a_long_function() {
    let body = "    let x = 1;\n".repeat(81);
    let text = format!("pub async fn long() {{\n{body}}}\n\nfn short() {{\n}}\n");
    assert_eq!(long_functions(&text, 80), [("long".to_string(), 83)]);
}

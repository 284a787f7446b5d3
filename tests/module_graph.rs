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

/// Where a file's test module begins: the first `#[cfg(test)]` that an inline `mod` follows
/// (test-only helpers elsewhere in the file are code like any other and are read).
fn test_module_start(text: &str) -> usize {
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]") {
        let at = from + i;
        let next = text[at + "#[cfg(test)]".len()..].trim_start();
        let item = next
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ");
        let line = item.lines().next().unwrap_or_default();
        if item.starts_with("mod ") && line.trim_end().ends_with('{') {
            return at;
        }
        from = at + 1;
    }
    text.len()
}

/// The text of a file up to its test module, without comments.
fn code(text: &str) -> String {
    text[..test_module_start(text)]
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The files that are test modules of their own (`#[cfg(test)] mod name;`).
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut test_only = BTreeSet::new();
    for file in files {
        let text = fs::read_to_string(file).unwrap();
        let stem = file.file_stem().unwrap().to_string_lossy();
        let dir = if ["mod", "lib", "main"].contains(&&*stem) {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        for part in text.split("#[cfg(test)]").skip(1) {
            let item = part.trim_start();
            if let Some(rest) = item.strip_prefix("mod ")
                && let Some((name, _)) = rest.split_once(';')
                && name.chars().all(|c| c.is_alphanumeric() || c == '_')
            {
                test_only.insert(dir.join(format!("{name}.rs")));
            }
        }
    }
    test_only
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let path: String = tree
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let rest = &tree[path.len()..];
    let Some(inner) = rest.strip_prefix('{') else {
        return vec![path.trim_end_matches(':').to_string()];
    };
    // The group's items, split at its own commas.
    let (mut depth, mut items, mut start) = (0usize, Vec::new(), 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&inner[start..i]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty() && *item != "self")
        .flat_map(|item| expand(item).into_iter().map(|p| format!("{path}{p}")))
        .collect()
}

/// Module paths a file refers to: `crate::a::b`, `super::x` (and `super::super::x`), grouped
/// imports expanded, in `use` items (re-exports too) and in code.
fn references(module: &str, code: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let parent_of = |m: &str| {
        m.rsplit_once("::")
            .map_or("crate".to_string(), |(p, _)| p.to_string())
    };
    for statement in code.split(';') {
        let flat: String = statement.split_whitespace().collect::<Vec<_>>().join(" ");
        let flat = flat
            .replace(":: ", "::")
            .replace(" ::", "::")
            .replace("{ ", "{")
            .replace(" }", "}");
        for prefix in ["crate::", "super::"] {
            for (i, _) in flat.match_indices(prefix) {
                let before = flat[..i].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let rest = &flat[i + prefix.len()..];
                let mut base = match prefix {
                    "crate::" => "crate".to_string(),
                    _ => parent_of(module),
                };
                let mut tree = rest;
                if prefix == "super::" {
                    while let Some(up) = tree.strip_prefix("super::") {
                        base = parent_of(&base);
                        tree = up;
                    }
                }
                for path in expand(tree) {
                    refs.push(if base == "crate" {
                        path
                    } else {
                        format!("{base}::{path}")
                    });
                }
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
    let test_only = test_only_files(&files);
    let files: Vec<(String, String)> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs") && !test_only.contains(*f))
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

    // Grouped imports, `super::super` and re-exports are all seen.
    let modules: BTreeSet<String> = ["x", "x::y", "x::y::z", "p", "q::r", "s"]
        .map(String::from)
        .into();
    let refs = references(
        "x::y::z",
        "use crate::{p::f, q::{r::g, self}};\nuse super::super::s::h;\npub use crate::x::y::i;",
    );
    let resolved: BTreeSet<_> = refs.iter().filter_map(|r| resolve(r, &modules)).collect();
    assert_eq!(
        resolved,
        ["p", "q::r", "x", "x::y"].map(String::from).into(),
        "{refs:?}"
    );
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
    let lines: Vec<&str> = text[..test_module_start(text)].lines().collect();
    let mut long = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // Qualifiers before `fn`, in any order: visibility, const, async, unsafe, extern "C".
        let mut signature = trimmed;
        loop {
            if let Some(scoped) = signature.strip_prefix("pub(") {
                signature = scoped.split_once(')').map_or("", |(_, s)| s).trim_start();
                continue;
            }
            let word = signature.split(' ').next().unwrap_or_default();
            let qualifier = word.starts_with("pub")
                || ["const", "async", "unsafe", "extern", "\"C\""].contains(&word);
            if !qualifier || word.len() == signature.len() {
                break;
            }
            signature = signature[word.len()..].trim_start();
        }
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
    let test_only = test_only_files(&files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| !test_only.contains(*f))
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
    let text = format!(
        "pub async fn long() {{\n{body}}}\n\nfn short() {{\n}}\n\n#[cfg(test)]\nfn helper() {{\n}}\n\npub(in crate::a) const unsafe fn after_a_helper() {{\n{body}}}\n\n#[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{body}    }}\n}}\n"
    );
    assert_eq!(
        long_functions(&text, 80),
        [("long".to_string(), 83), ("after_a_helper".to_string(), 83)],
        "code after a test-only helper is read; the test module is not"
    );
}

//! The architecture test: every module of `src/` imports only modules of its own layer or
//! lower ones, and no two modules import each other, directly or through others. The layers
//! are the ones ARCHITECTURE.md draws (its `## Layers` section); there is no list of
//! exceptions.
//!
//! A module is a top-level item of the crate (`src/graph/` and everything under it is
//! `graph`). An import is any `crate::<module>` path in code (a `use`, a path in an
//! expression or type, a path in an attribute string such as `#[serde(with = "...")]`);
//! comments and doc comments are not code (an intra-doc link may point anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One import of one module by another, where it was seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Import {
    from: String,
    to: String,
    file: String,
    line: usize,
}

/// The layers of ARCHITECTURE.md: module → layer number (0 is the ground).
fn layers_from(architecture: &str) -> BTreeMap<String, u32> {
    let section = architecture
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let block = section
        .split("```text")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the Layers section draws the layers in a ```text block");
    let mut layers = BTreeMap::new();
    for line in block.lines() {
        let mut words = line.split_whitespace();
        let Some(Ok(layer)) = words.next().map(str::parse::<u32>) else {
            continue;
        };
        for module in words {
            let previous = layers.insert(module.to_owned(), layer);
            assert!(
                previous.is_none(),
                "module `{module}` is drawn on two layers"
            );
        }
    }
    assert!(!layers.is_empty(), "the Layers block names no modules");
    layers
}

/// The code of a Rust file with comments blanked out (line structure kept), so that doc
/// links and prose do not count as imports. String literals are kept: attribute paths live in
/// them.
fn strip_comments(source: &str) -> String {
    // Works on bytes, so that a non-ASCII character anywhere (a `→` in a string, an `é` in a
    // char literal) is copied through whole instead of being sliced in half.
    let bytes = source.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        let rest = &bytes[i..];
        if in_string {
            out.push(c);
            if c == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1]);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
            i += 1;
        } else if c == b'"' {
            in_string = true;
            out.push(c);
            i += 1;
        } else if rest.starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if bytes[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if bytes[i] == b'\n' {
                        out.push(b'\n');
                    }
                    i += 1;
                }
            }
        } else if c == b'\'' && rest.starts_with(b"'\\") {
            // An escaped char literal ('\'', '\u{2192}'): copied to its closing quote.
            let end = bytes[i + 2..]
                .iter()
                .position(|&b| b == b'\'')
                .map_or(bytes.len(), |e| i + 2 + e + 1);
            out.extend_from_slice(&bytes[i..end]);
            i = end;
        } else if c == b'\'' {
            // A char literal such as '"' (or a multi-byte one such as '→') must not open a
            // string; a lifetime has no closing quote within a character.
            let width = source[i + 1..].chars().next().map_or(0, char::len_utf8);
            if width > 0 && bytes.get(i + 1 + width) == Some(&b'\'') {
                out.extend_from_slice(&bytes[i..i + 2 + width]);
                i += 2 + width;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The module a source file belongs to: `src/graph/build.rs` → `graph`, `src/id.rs` → `id`;
/// `None` for the crate root.
fn module_of(relative: &Path) -> Option<String> {
    let mut parts = relative.components();
    let first = parts.next()?.as_os_str().to_str()?.to_owned();
    if parts.next().is_some() {
        return Some(first);
    }
    let name = first.strip_suffix(".rs")?;
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// Every `crate::<module>` path and every `super::super` escape in `code`.
fn imports_in(module: &str, file: &str, code: &str, modules: &BTreeSet<String>) -> Vec<Import> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            let after = &rest[at + "crate::".len()..];
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `tollgate_crate::`, `$crate::`-like names
            }
            let target: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&target) && target != module {
                found.push(Import {
                    from: module.to_owned(),
                    to: target,
                    file: file.to_owned(),
                    line: n + 1,
                });
            }
        }
        assert!(
            !line.contains("super::super"),
            "{file}:{}: `super::super` reaches out of its module; name the module with `crate::`",
            n + 1
        );
    }
    found
}

/// Every import between modules in the source tree under `src`.
fn imports_under(src: &Path, modules: &BTreeSet<String>) -> Vec<Import> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut imports = Vec::new();
    for path in files {
        let relative = path.strip_prefix(src).expect("under src");
        let Some(module) = module_of(relative) else {
            continue;
        };
        let code = strip_comments(&fs::read_to_string(&path).expect("a readable source file"));
        let file = PathBuf::from("src").join(relative).display().to_string();
        imports.extend(imports_in(&module, &file, &code, modules));
    }
    imports
}

/// What breaks the rules: imports that point up, and cycles between modules.
fn violations(layers: &BTreeMap<String, u32>, imports: &[Import]) -> Vec<String> {
    let mut problems = Vec::new();
    for i in imports {
        match (layers.get(&i.from), layers.get(&i.to)) {
            (Some(from), Some(to)) if to > from => problems.push(format!(
                "{}:{}: `{}` (layer {from}) imports `{}` (layer {to}), which is above it",
                i.file, i.line, i.from, i.to
            )),
            (None, _) => problems.push(format!("module `{}` is on no layer", i.from)),
            (_, None) => problems.push(format!("module `{}` is on no layer", i.to)),
            _ => {}
        }
    }
    // Cycles: depth-first search over the module graph, iteratively.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in imports {
        edges.entry(&i.from).or_default().insert(&i.to);
    }
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for start in edges.keys().copied() {
        if done.contains(start) {
            continue;
        }
        let mut path: Vec<&str> = vec![start];
        let mut next: Vec<Vec<&str>> = vec![edges[start].iter().copied().collect()];
        while let Some(todo) = next.last_mut() {
            match todo.pop() {
                Some(to) if path.contains(&to) => {
                    let at = path.iter().position(|m| *m == to).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[at..].to_vec();
                    cycle.push(to);
                    problems.push(format!("modules import each other: {}", cycle.join(" -> ")));
                }
                Some(to) if done.contains(to) => {}
                Some(to) => {
                    path.push(to);
                    next.push(
                        edges
                            .get(to)
                            .map(|e| e.iter().copied().collect())
                            .unwrap_or_default(),
                    );
                }
                None => {
                    next.pop();
                    if let Some(m) = path.pop() {
                        done.insert(m);
                    }
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_import_points_down_and_no_modules_import_each_other() {
    let architecture = fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let layers = layers_from(&architecture);
    let src = root().join("src");
    let on_disk: BTreeSet<String> = fs::read_dir(&src)
        .expect("src")
        .filter_map(|e| {
            let entry = e.ok()?;
            let name = entry.file_name().into_string().ok()?;
            if entry.path().is_dir() {
                Some(name)
            } else {
                module_of(Path::new(&name))
            }
        })
        .collect();
    let drawn: BTreeSet<String> = layers.keys().cloned().collect();
    assert_eq!(
        on_disk, drawn,
        "ARCHITECTURE.md must draw every module of src/ on a layer, and only those"
    );
    let imports = imports_under(&src, &on_disk);
    assert!(
        imports.len() > 50,
        "only {} imports found: the scanner is broken",
        imports.len()
    );
    let problems = violations(&layers, &imports);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_catches_an_upward_import_and_a_cycle() {
    let layers = layers_from("\n## Layers\n```text\n2  top\n1  middle other\n0  ground\n```\n");
    let modules: BTreeSet<String> = layers.keys().cloned().collect();
    let code = strip_comments(
        "use crate::top::Thing; // crate::ground in a comment is not an import\n\
         /// [`X`](crate::top::X) is a doc link\n\
         #[serde(with = \"crate::ground::millis\")]\n\
         fn f() -> crate::other::T { todo!() }\n",
    );
    let mut imports = imports_in("middle", "src/middle.rs", &code, &modules);
    assert_eq!(
        imports
            .iter()
            .map(|i| (i.to.as_str(), i.line))
            .collect::<Vec<_>>(),
        [("top", 1), ("ground", 3), ("other", 4)]
    );
    imports.extend(imports_in(
        "other",
        "src/other.rs",
        "use crate::middle::M;",
        &modules,
    ));
    let problems = violations(&layers, &imports);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`middle` (layer 1) imports `top` (layer 2)")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("modules import each other: ")),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(
        module_of(Path::new("graph/build.rs")).as_deref(),
        Some("graph")
    );
    assert_eq!(module_of(Path::new("id.rs")).as_deref(), Some("id"));
    assert_eq!(module_of(Path::new("lib.rs")), None);
}

#[test]
fn the_comment_stripper_keeps_code_and_strings_whole_around_non_ascii_text() {
    let source = "let arrow = '→'; // é, a comment\nlet s = \"a → b\"; /* ü */ let q = '\"';\nuse crate::id;";
    let stripped = strip_comments(source);
    assert_eq!(
        stripped,
        "let arrow = '→'; \nlet s = \"a → b\";  let q = '\"';\nuse crate::id;"
    );
}

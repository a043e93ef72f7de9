//! The module graph of `src/` (docs/ARCHITECTURE.md, "Layers"): the low layers are leaves,
//! and no import cycle spans more than two top-level modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it imports through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src/");
            let first = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("a file name");
            let module = first.trim_end_matches(".rs").to_owned();
            if matches!(module.as_str(), "lib" | "main") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            let deps = graph.entry(module.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// `metrics`, `store`, `config`, `error` (and the other leaves) never import the layers above.
#[test]
fn low_layers_import_nothing_of_the_request_path() {
    let g = graph();
    let upper = ["server", "service", "router", "guards", "handlers", "app"];
    for leaf in [
        "metrics", "store", "config", "error", "wire", "response", "ready", "latency", "snapshot",
        "audit", "auth",
    ] {
        let deps = g.get(leaf).unwrap_or_else(|| panic!("no module {leaf}"));
        for u in upper {
            assert!(!deps.contains(u), "{leaf} imports {u}: {deps:?}");
        }
    }
}

/// The audit trail is a leaf: it is handed a path and a size and imports nothing of the crate
/// (at most `config`).
#[test]
fn audit_imports_nothing_of_the_crate_but_config() {
    let g = graph();
    let deps = g.get("audit").expect("module audit");
    assert!(deps.iter().all(|d| d == "config"), "audit imports {deps:?}");
}

/// Every cycle found by walking the graph has at most two members.
#[test]
fn no_import_cycle_spans_more_than_two_modules() {
    let g = graph();
    for start in g.keys() {
        // Modules reachable from `start`; a cycle through `start` exists for each of them
        // that reaches back.
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = g[start].iter().collect();
        while let Some(m) = todo.pop() {
            if seen.insert(m.clone()) {
                if let Some(next) = g.get(m) {
                    todo.extend(next.iter());
                }
            }
        }
        if !seen.contains(start) {
            continue;
        }
        let members: BTreeSet<&String> = seen
            .iter()
            .filter(|m| {
                // m is on a cycle with start when start is reachable from m.
                let mut seen2 = BTreeSet::new();
                let mut todo2: Vec<&String> =
                    g.get(*m).map(|d| d.iter().collect()).unwrap_or_default();
                while let Some(x) = todo2.pop() {
                    if seen2.insert(x.clone()) {
                        if let Some(next) = g.get(x) {
                            todo2.extend(next.iter());
                        }
                    }
                }
                seen2.contains(start)
            })
            .collect();
        assert!(
            members.len() <= 2,
            "import cycle through {start}: {members:?}"
        );
    }
}

//! The layer of every module, and a test that reads the sources and fails when a module imports
//! one above its own layer (`crate::<module>` anywhere in its files, comments aside). The table
//! is drawn in `lib.rs`; keep the two in step.

/// The layers, lowest first, each with its modules.
pub(crate) const LAYERS: &[(&str, &[&str])] = &[
    (
        "records",
        &[
            "names",
            "words",
            "child_env",
            "fault",
            "tests_file",
            "config",
            "model",
            "transcript",
            "generation",
            "pricing",
        ],
    ),
    ("store", &["store", "statedir", "process", "git"]),
    (
        "decisions",
        &[
            "healer",
            "hints",
            "prompt",
            "plan",
            "classify",
            "budget",
            "agent",
            "control",
            "templates",
        ],
    ),
    (
        "engine",
        &[
            "runtime",
            "attempt",
            "loop_actor",
            "fleet",
            "scheduler",
            "monitor",
            "tree",
            "notifier",
            "reporter",
            "reconcile",
            "rollback",
            "launch",
            "hold",
            "ledger",
            "view",
        ],
    ),
    ("interfaces", &["schema"]),
];

/// Upward imports that are still there, `(from, to)`: each is a debt to pay, never a place to
/// add to. The test fails when one of them is gone (take it off) or when a new one appears.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::{KNOWN_UPWARD, LAYERS};

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|(_, mods)| mods.contains(&module))
    }

    /// `module.rs` and every file under `module/`.
    fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
        let mut files = vec![src.join(format!("{module}.rs"))];
        let mut dirs = vec![src.join(module)];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        files.retain(|f| f.exists());
        files
    }

    /// The modules `text` names as `crate::<module>`, outside comments.
    fn imports(text: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
        found
    }

    #[test]
    fn every_module_has_a_layer_and_imports_only_downward() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut modules = Vec::new();
        for e in std::fs::read_dir(&src).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(m) = name.strip_suffix(".rs") {
                if m != "lib" && m != "layers" {
                    modules.push(m.to_string());
                }
            } else if e.path().join("mod.rs").exists() {
                modules.push(name);
            }
        }
        modules.sort();
        modules.dedup();
        let unplaced: Vec<&String> = modules.iter().filter(|m| layer_of(m).is_none()).collect();
        assert!(
            unplaced.is_empty(),
            "modules without a layer in layers.rs (and lib.rs): {unplaced:?}"
        );
        let mut upward = BTreeSet::new();
        for m in &modules {
            let own = layer_of(m).unwrap();
            for f in files_of(&src, m) {
                let text = std::fs::read_to_string(&f).unwrap();
                for dep in imports(&text) {
                    match layer_of(&dep) {
                        Some(l) if l > own && dep != *m => {
                            upward.insert((m.clone(), dep, f.display().to_string()));
                        }
                        _ => {}
                    }
                }
            }
        }
        let found: BTreeSet<(String, String)> = upward
            .iter()
            .map(|(a, b, _)| (a.clone(), b.clone()))
            .collect();
        let known: BTreeSet<(String, String)> = KNOWN_UPWARD
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let new: Vec<_> = upward
            .iter()
            .filter(|(a, b, _)| !known.contains(&(a.clone(), b.clone())))
            .collect();
        assert!(
            new.is_empty(),
            "modules that import one above their layer: {new:#?}"
        );
        let paid: Vec<_> = known.difference(&found).collect();
        assert!(
            paid.is_empty(),
            "no longer upward, take them off KNOWN_UPWARD: {paid:?}"
        );
    }

    #[test]
    fn the_import_reader_sees_paths_and_skips_comments() {
        let text = "use crate::model::{A, B};\nlet x = crate::store::Store::open(); // crate::view\n/// see crate::healer\n";
        let got: Vec<String> = imports(text).into_iter().collect();
        assert_eq!(got, ["model", "store"]);
    }
}

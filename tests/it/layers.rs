//! The allowed dependencies between the modules of `src/` (README, "Code map"): leaf modules
//! return domain values and never reach the driver's inbox, the executor, the driver, the HTTP
//! server or the start-up; the shell modules depend downwards only. A grep over `crate::`
//! paths is enough to hold the line.

use std::collections::BTreeMap;
use std::path::Path;

/// The shell: each may use the modules it names, and every leaf.
const SHELL: &[(&str, &[&str])] = &[
    ("input", &[]),
    ("executor", &["input"]),
    ("http", &["input"]),
    ("driver", &["input", "executor"]),
    ("run", &["input", "executor", "http", "driver", "cli"]),
    ("cli", &[]),
    ("main", &["run", "cli"]),
    ("lib", &[]),
];

fn module_of(file: &Path, src: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::<module>` a file names, outside comments.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
            rest = after;
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_use_only_what_the_code_map_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let shell: BTreeMap<&str, &[&str]> = SHELL.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let module = module_of(file, &src);
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_paths(&text) {
            if used == module {
                continue;
            }
            let used_is_shell = shell.contains_key(used.as_str());
            let allowed = match shell.get(module.as_str()) {
                // A shell module: the ones it names, and any leaf.
                Some(allowed) => !used_is_shell || allowed.contains(&used.as_str()),
                // A leaf: leaves only.
                None => !used_is_shell,
            };
            if !allowed {
                broken.push(format!("{} uses crate::{used}", file.display()));
            }
        }
    }
    assert!(files.len() > 40, "found only {} files", files.len());
    assert!(
        broken.is_empty(),
        "dependencies the code map does not allow:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_a_forbidden_import() {
    let found = crate_paths("use crate::input::Input; // crate::driver in a comment\n");
    assert_eq!(found, ["input"]);
}

/// The README's exit-code table lists exactly the codes of `ExitCode`, in order.
#[test]
fn the_readme_exit_codes_are_the_exit_code_enum() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = readme
        .split("### Exit codes")
        .nth(1)
        .expect("an exit-code section");
    let codes: Vec<i32> = table
        .lines()
        .skip_while(|l| !l.starts_with("| code"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    let expected: Vec<i32> = compute_ctl::exit::ExitCode::ALL
        .iter()
        .map(|c| c.code())
        .collect();
    assert_eq!(codes, expected);
}

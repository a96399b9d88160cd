//! The states crate stays pure: no clock, no files, no network, no processes, no threads, and
//! serde as its only dependency.

use std::path::{Path, PathBuf};

const FORBIDDEN: [&str; 7] = [
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "Instant::now",
    "SystemTime::now",
    "std::env",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
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
fn source_performs_no_io_and_reads_no_clock() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 10, "found only {} source files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in FORBIDDEN {
            assert!(
                !text.contains(needle),
                "{} uses {needle}: the states crate must stay pure",
                file.display()
            );
        }
    }
}

#[test]
fn depends_on_serde_only() {
    let manifest =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let names: Vec<&str> = deps
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['=', ' ']).next().unwrap())
        .collect();
    assert_eq!(names, vec!["serde"]);
}

//! The operators' tools some tests run (promtool, systemd-analyze, schemathesis,
//! kubernetes-validate): found on `PATH`, else in the Python venv `.ci/run` makes
//! (`$COMPUTE_CTL_CI_VENV`, default `$HOME/.venv-ci`). A missing tool fails the test, naming
//! how to get it: a test that cannot run must not pass.

use std::path::PathBuf;

/// The venv `.ci/run` installs the Python tools into (`$COMPUTE_CTL_CI_VENV`, default
/// `$HOME/.venv-ci`).
pub fn venv() -> PathBuf {
    std::env::var_os("COMPUTE_CTL_CI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".venv-ci")
        })
}

/// The path of `name`, or a panic saying which package provides it.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([venv().join("bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: run .ci/run, or install {package} (see .ci/run)")
    })
}

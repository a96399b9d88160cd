//! When the disk under the state directory fills up: nothing is accepted (503), the journal
//! stays readable, and compute_ctl stops Postgres and exits 1 rather than run unjournaled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::compute::{embedded_spec, free_port, processes_in, Compute, Launch};

/// A small tmpfs mounted for one test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a tmpfs at {}",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }

    /// Writes zeros until the file system is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0_u8; 4096];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_data())
            .is_ok()
        {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn with_name(port: u16, name: &str) -> Value {
    let mut spec = embedded_spec(port);
    spec["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "application_name", "value": name }));
    spec
}

#[test]
fn a_full_disk_accepts_nothing_and_stops_postgres() {
    let dir = crate::support::compute::traversable_tempdir();
    let state = dir.path().join("state");
    let mount = Tmpfs::mount(&state, "2m");
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(with_name(port, "a")),
        args: vec!["--state-dir".into(), state.display().to_string()],
        dir: Some(dir.path().to_path_buf()),
        ..Launch::default()
    });
    compute.state_dir = state.clone();
    compute.wait_running();
    let (status, _) = compute.post_spec(&with_name(port, "b"));
    assert_eq!(status, 202);
    compute.wait_running();

    mount.fill();
    // Both specs are stored already: only the journal can run out of room now (once the
    // segment's last page is used up).
    // The journal fills either on a POST (503, nothing accepted) or on a record the driver
    // writes itself (a step's end): either way the process must stop.
    let mut acknowledged = vec![1, 2];
    for round in 0..200 {
        let name = if round % 2 == 0 { "a" } else { "b" };
        let (status, body, _) = compute.post("/spec", Some(&with_name(port, name)), &[]);
        match status {
            202 => acknowledged.push(body["generation"].as_u64().unwrap()),
            503 => {
                assert!(
                    body["error"].as_str().unwrap().contains("journal"),
                    "{body}"
                );
                break;
            }
            other => panic!("answered {other}: {body}"),
        }
        let settled = compute.wait_until(Duration::from_secs(60), |state| {
            state.is_none_or(|s| {
                s["phase"] == "running" && s["applied_generation"] == s["desired_generation"]
            })
        });
        if settled.is_none() {
            break;
        }
    }
    assert_eq!(compute.wait_exit(Duration::from_secs(60)).code(), Some(1));
    assert!(
        processes_in(&compute.pgdata).is_empty(),
        "postgres left running"
    );

    // Exactly what was acknowledged was accepted.
    let generations: Vec<u64> = compute
        .journal_files()
        .iter()
        .filter(|r| r["kind"] == "spec_accepted")
        .map(|r| r["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(generations, acknowledged);
    drop(compute);
}

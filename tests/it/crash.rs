//! Crash safety of accepted specs: while a client posts a stream of specs, compute_ctl is
//! `kill -9`ed at random moments and restarted. It must come back running the last spec that
//! got a 202 or a later one (never an earlier one), with a journal that verifies and a gap-free
//! seq. Seeded: a failure prints the seed (`CRASH_SEED`), `CRASH_ROUNDS` sets the rounds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::compute::{embedded_spec, free_port, Compute, Launch};

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn spec_number(port: u16, n: u64) -> Value {
    let mut spec = embedded_spec(port);
    spec["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "application_name", "value": format!("spec-{n}") }));
    spec
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn kill_9_during_a_stream_of_specs_never_goes_back() {
    let seed = env_u64("CRASH_SEED", 0xC0FFEE);
    let rounds = env_u64("CRASH_ROUNDS", 50);
    let mut rng = Rng(seed);
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(spec_number(port, 0)),
        ..Launch::default()
    });
    compute.wait_running();
    let mut next = 1_u64;
    // (spec number, generation) of the last 202.
    let mut last_acked: (u64, u64) = (0, 1);
    for round in 0..rounds {
        let context = format!("seed {seed}, round {round} (rerun: CRASH_SEED={seed})");
        let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = {
            let (acked, stop, url) = (acked.clone(), stop.clone(), compute.url("/spec"));
            let first = next;
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(5))
                    .build();
                let mut n = first;
                while !stop.load(Ordering::SeqCst) {
                    let body = spec_number(port, n).to_string();
                    match agent
                        .post(&url)
                        .set("Content-Type", "application/json")
                        .send_string(&body)
                    {
                        // 200: the spec is already the desired one (journaled before a kill
                        // cut its 202).
                        Ok(response) if matches!(response.status(), 200 | 202) => {
                            let answer: Value =
                                serde_json::from_str(&response.into_string().unwrap()).unwrap();
                            acked
                                .lock()
                                .unwrap()
                                .push((n, answer["generation"].as_u64().unwrap()));
                        }
                        Ok(response) => panic!("spec {n} answered {}", response.status()),
                        Err(ureq::Error::Status(code, r)) => {
                            panic!("spec {n} answered {code}: {:?}", r.into_string())
                        }
                        // compute_ctl was killed.
                        Err(_) => break,
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(3));
                }
                n
            })
        };
        // Kill at a random moment: during start-up (right after the restart) or later.
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        compute.kill9();
        stop.store(true, Ordering::SeqCst);
        next = client.join().unwrap();
        if let Some(last) = acked.lock().unwrap().last() {
            last_acked = *last;
        }

        compute.restart(None, vec![]);
        let state = compute.wait_running();
        let desired = state["desired_generation"].as_u64().unwrap();
        assert!(
            desired >= last_acked.1,
            "{context}: desired generation {desired} is older than the last acknowledged {}",
            last_acked.1
        );
        let running: String = compute
            .admin()
            .query_one("SHOW application_name", &[])
            .unwrap()
            .get(0);
        let running_number: u64 = running.trim_start_matches("spec-").parse().unwrap();
        assert!(
            running_number >= last_acked.0,
            "{context}: runs spec {running_number}, but spec {} got a 202",
            last_acked.0
        );

        let records = compute.journal();
        for (i, record) in records.iter().enumerate() {
            assert_eq!(
                record["seq"].as_u64(),
                Some(i as u64 + 1),
                "{context}: seq gap at {record}"
            );
        }
        compute.assert_journal_verifies(&context);
    }
    eprintln!(
        "{rounds} rounds, {} specs posted, last acknowledged generation {}",
        next - 1,
        last_acked.1
    );
}

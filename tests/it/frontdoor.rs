//! The front door never closes (CONTRACT.md, "Security of the API"): waiting requests hold no
//! thread, slow clients are cut off, and every limit of the HTTP server answers as documented.
//! Raw sockets, so that a test can hold a hundred connections without a hundred threads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::compute::{embedded_spec, free_port, standin_bindir, Compute, Launch};

const MINUTE: Duration = Duration::from_secs(60);
/// How long a probe may take on a loaded machine (the benchmark measures the real figure).
const PROBE_BOUND: Duration = Duration::from_secs(2);

fn connect(compute: &Compute) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", compute.http_port)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends `text` on a new connection and keeps it open.
fn send(compute: &Compute, text: &[u8]) -> TcpStream {
    let mut stream = connect(compute);
    stream.write_all(text).unwrap();
    stream
}

/// Reads what the server sends until it closes or `timeout` passes.
fn read_answer(stream: &mut TcpStream, timeout: Duration) -> String {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&out);
                // One whole answer (we send Content-Length on every one).
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|n| n.trim().parse::<usize>().ok());
                    if length.is_some_and(|n| body.len() >= n) {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

fn status_of(answer: &str) -> Option<u16> {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok())
}

fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A probe: its status and how long it took.
fn probe(compute: &Compute, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let (status, _) = compute
        .get(path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", compute.log()));
    (status, started.elapsed())
}

fn configure_request(body: &str) -> Vec<u8> {
    format!(
        "POST /configure HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn probes_and_terminate_answer_while_long_polls_slow_clients_and_configures_wait() {
    // initdb takes 8 s: the start is slow, and /configure waits for it.
    let dir = crate::support::compute::traversable_tempdir();
    let postgres = standin_bindir(
        dir.path(),
        &[(
            "initdb",
            "sleep 8; exec /usr/lib/postgresql/15/bin/initdb \"$@\"",
        )],
    );
    let mut compute = Compute::start(Launch {
        args: vec!["-b".into(), postgres.display().to_string()],
        ..Launch::default()
    });
    compute.wait_phase("empty", MINUTE);
    let pid = compute.pid().unwrap();
    let idle_threads = threads(pid);

    // 64 long-polls that nothing will answer for a minute.
    let mut polls: Vec<TcpStream> = (0..64)
        .map(|_| {
            send(
                &compute,
                b"GET /journal?since=999999999&wait=60 HTTP/1.1\r\nHost: t\r\n\r\n",
            )
        })
        .collect();
    // 64 slow clients: a byte a second of a request head.
    let head = b"GET /state HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut slow: Vec<TcpStream> = (0..64).map(|_| send(&compute, &head[..1])).collect();
    let slow_began = Instant::now();
    let mut sent = 1;
    let mut last_byte = Instant::now();
    // 16 /configure that wait for the slow start.
    let envelope = json!({ "spec": embedded_spec(free_port()) }).to_string();
    let mut configures: Vec<TcpStream> = (0..16)
        .map(|_| send(&compute, &configure_request(&envelope)))
        .collect();

    let mut slowest = Duration::ZERO;
    let mut rounds = 0;
    let mut saw_start = false;
    let deadline = Instant::now() + 2 * MINUTE;
    loop {
        assert!(
            Instant::now() < deadline,
            "never ran\nlog:\n{}",
            compute.log()
        );
        if last_byte.elapsed() >= Duration::from_secs(1) && sent < head.len() {
            for stream in &mut slow {
                // A client the server cut off refuses the byte: that is fine.
                let _ = stream.write_all(&head[sent..sent + 1]);
            }
            sent += 1;
            last_byte = Instant::now();
        }
        let (status, took) = probe(&compute, "/healthz");
        assert_eq!(status, 200, "/healthz");
        slowest = slowest.max(took);
        let (status, took) = probe(&compute, "/state");
        assert_eq!(status, 200, "/state");
        slowest = slowest.max(took);
        let (readyz, took) = probe(&compute, "/readyz");
        slowest = slowest.max(took);
        let state = compute.state();
        rounds += 1;
        saw_start |= state["phase"] == "basebackup";
        if state["phase"] == "running" {
            assert_eq!(readyz, 200, "/readyz while running");
            break;
        }
        // While the compute starts, /readyz answers at once that it is not ready.
        assert_eq!(readyz, 503, "/readyz in {}", state["phase"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(saw_start, "the slow start was not seen");
    eprintln!("{rounds} rounds of probes; slowest {slowest:?}");
    assert!(
        slowest < PROBE_BOUND,
        "a probe took {slowest:?} with 144 requests waiting"
    );

    // Every /configure is answered once the compute runs.
    for stream in &mut configures {
        let answer = read_answer(stream, MINUTE);
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        assert!(answer.contains("\"status\":\"running\""), "{answer}");
    }
    // The long-polls still wait; the slow clients are cut off at the head's deadline (10 s).
    assert_eq!(compute.get("/healthz").unwrap().0, 200);
    for stream in &mut slow {
        let left = Duration::from_secs(40).saturating_sub(slow_began.elapsed());
        let answer = read_answer(stream, left.max(Duration::from_secs(1)));
        assert_eq!(status_of(&answer), Some(408), "a slow client: {answer:?}");
    }
    assert!(
        compute.log().contains("cut off the slow client"),
        "the cut-off is not logged"
    );
    let running_threads = threads(pid);
    eprintln!("threads: {idle_threads} in empty, {running_threads} running after the cut-off");

    // A second wave of slow clients costs no thread either, and goes.
    let mut wave: Vec<TcpStream> = (0..64).map(|_| send(&compute, b"G")).collect();
    assert_eq!(threads(pid), running_threads, "slow clients cost threads");
    for stream in &mut wave {
        let answer = read_answer(stream, Duration::from_secs(40));
        assert_eq!(status_of(&answer), Some(408), "{answer:?}");
    }
    assert_eq!(
        threads(pid),
        running_threads,
        "the thread count is not back"
    );

    // Terminate answers at once, the long-polls still parked.
    let started = Instant::now();
    let (status, body, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200, "{body}");
    eprintln!("POST /terminate answered in {:?}", started.elapsed());
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    for stream in &mut polls {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        // Closed with the process (or answered): never left hanging.
        let _ = stream.read(&mut byte);
    }
}

#[test]
fn each_limit_gets_its_answer() {
    let mut compute = Compute::start(Launch::default());
    compute.wait_phase("empty", MINUTE);
    let before = compute.state()["seq"].clone();

    // The slow ones first: their clocks run while the others are checked.
    let mut slow_head = send(&compute, b"GET /state HTTP/1.1\r\nHost: t\r\n");
    let mut slow_body = send(
        &compute,
        b"POST /spec HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"format",
    );
    let slow_began = Instant::now();

    let line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9 * 1024));
    let answer = read_answer(&mut send(&compute, line.as_bytes()), MINUTE);
    assert_eq!(status_of(&answer), Some(414), "{answer}");

    let big = format!(
        "GET /state HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nX-Big2: {}\r\n\r\n",
        "a".repeat(7000),
        "b".repeat(30000)
    );
    let answer = read_answer(&mut send(&compute, big.as_bytes()), MINUTE);
    assert_eq!(status_of(&answer), Some(431), "{answer}");

    let mut many = String::from("GET /state HTTP/1.1\r\nHost: t\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let answer = read_answer(&mut send(&compute, many.as_bytes()), MINUTE);
    assert_eq!(status_of(&answer), Some(431), "{answer}");

    let too_long = b"POST /spec HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                     Content-Length: 16777217\r\n\r\n{";
    let answer = read_answer(&mut send(&compute, too_long), MINUTE);
    assert_eq!(status_of(&answer), Some(413), "{answer}");
    // Also when the client sends the whole body at once (ureq does).
    let (status, body, _) = compute.post(
        "/spec",
        Some(&json!({ "pad": "x".repeat(16 * 1024 * 1024) })),
        &[],
    );
    assert_eq!(status, 413, "{body}");

    let chunked = b"POST /spec HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n0\r\n\r\n";
    let answer = read_answer(&mut send(&compute, chunked), MINUTE);
    assert_eq!(status_of(&answer), Some(411), "{answer}");

    let answer = read_answer(&mut send(&compute, b"NOT HTTP\r\n\r\n"), MINUTE);
    assert_eq!(status_of(&answer), Some(400), "{answer}");

    // Parked requests: PARKED_MAX long-polls park; one more long-poll is answered at once,
    // a request for the driver gets 503, and POST /terminate is parked whatever the count.
    let mut polls: Vec<TcpStream> = (0..256)
        .map(|_| {
            send(
                &compute,
                b"GET /journal?since=999999999&wait=60 HTTP/1.1\r\nHost: t\r\n\r\n",
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    for poll in &mut polls {
        let answer = read_answer(poll, Duration::from_millis(1));
        assert!(
            answer.is_empty(),
            "a long-poll was answered at once: {answer}"
        );
    }
    let deadline = Instant::now() + MINUTE;
    let extra = loop {
        // Until all 256 are parked, one more long-poll may still park: ask with a short wait.
        let started = Instant::now();
        let mut extra = send(
            &compute,
            b"GET /journal?since=999999999&wait=2 HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        let answer = read_answer(&mut extra, Duration::from_secs(10));
        if started.elapsed() < Duration::from_secs(1) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the long-polls never all parked\nlog:\n{}",
            compute
                .log()
                .lines()
                .filter(|l| l.contains("http"))
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    assert_eq!(status_of(&extra), Some(200), "{extra}");
    let envelope = json!({ "spec": embedded_spec(free_port()) });
    let (status, body, _) = compute.post("/configure", Some(&envelope), &[]);
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("waiting"),
        "{body}"
    );
    assert_eq!(
        compute.state()["seq"],
        before,
        "a refused request was journaled"
    );
    drop(polls.drain(..));

    // The slow ones: cut off with 408, and logged.
    let answer = read_answer(&mut slow_head, Duration::from_secs(40));
    assert_eq!(status_of(&answer), Some(408), "slow head: {answer:?}");
    let head_took = slow_began.elapsed();
    let answer = read_answer(&mut slow_body, Duration::from_secs(60));
    assert_eq!(status_of(&answer), Some(408), "slow body: {answer:?}");
    eprintln!(
        "slow head cut off after {head_took:?}, slow body after {:?}",
        slow_began.elapsed()
    );
    let log = compute.log();
    assert!(log.contains("request head was not received"), "{log}");
    assert!(log.contains("request body was not received"), "{log}");

    // Connections: beyond CONNECTIONS_MAX, 503 at once and closed; then the door opens again.
    let mut open: Vec<TcpStream> = Vec::new();
    let mut refused = None;
    for _ in 0..600 {
        let mut stream = connect(&compute);
        if open.len() >= 500 {
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let answer = read_answer(&mut stream, Duration::from_millis(300));
            if !answer.is_empty() {
                refused = Some(answer);
                break;
            }
        }
        open.push(stream);
    }
    let refused = refused.expect("no connection was refused");
    assert_eq!(status_of(&refused), Some(503), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");
    drop(open);
    let deadline = Instant::now() + MINUTE;
    while compute.get("/healthz").map(|(s, _)| s) != Ok(200) {
        assert!(Instant::now() < deadline, "the door stayed shut");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(compute.state()["seq"], before);
    let (status, _, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

#[test]
fn keep_alive_and_pipelined_requests() {
    let mut compute = Compute::start(Launch::default());
    compute.wait_phase("empty", MINUTE);
    let mut stream = send(
        &compute,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: one\r\n\r\n\
          GET /state HTTP/1.1\r\nHost: t\r\nX-Request-Id: two\r\n\r\n",
    );
    // Both answers, in order, on the one connection.
    let mut both = String::new();
    let deadline = Instant::now() + MINUTE;
    while both.matches("HTTP/1.1 200 OK").count() < 2 || !both.contains("\"phase\"") {
        assert!(Instant::now() < deadline, "two answers never came: {both}");
        both.push_str(&read_answer(&mut stream, Duration::from_secs(1)));
    }
    let one = both.find("X-Request-Id: one").expect("no answer to one");
    let two = both.find("X-Request-Id: two").expect("no answer to two");
    assert!(one < two, "{both}");
    // Answers given on the I/O thread (`/healthz`, `/state`) and on a request thread
    // (`/fsm`, `/metrics`), pipelined in turn, still come back in order.
    let mut stream = send(
        &compute,
        b"GET /fsm HTTP/1.1\r\nHost: t\r\nX-Request-Id: m1\r\n\r\n\
          GET /state HTTP/1.1\r\nHost: t\r\nX-Request-Id: m2\r\n\r\n\
          GET /metrics HTTP/1.1\r\nHost: t\r\nX-Request-Id: m3\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: m4\r\n\r\n",
    );
    let mut all = String::new();
    while !all.contains("X-Request-Id: m4") {
        assert!(Instant::now() < deadline, "four answers never came: {all}");
        all.push_str(&read_answer(&mut stream, Duration::from_secs(1)));
    }
    let at: Vec<usize> = ["m1", "m2", "m3", "m4"]
        .iter()
        .map(|id| {
            all.find(&format!("X-Request-Id: {id}\r\n"))
                .unwrap_or_else(|| panic!("no answer to {id}: {all}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order: {all}");
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 4, "{all}");
    stream
        .write_all(b"GET /fsm HTTP/1.0\r\nHost: t\r\n\r\n")
        .unwrap();
    let third = read_answer(&mut stream, MINUTE);
    assert_eq!(status_of(&third), Some(200), "{third}");
    assert!(third.contains("Connection: close"), "{third}");
}

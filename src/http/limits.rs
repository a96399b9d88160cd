//! Every limit of the HTTP API, in one place, units last (README, "Limits of the API").

use std::time::Duration;

/// Open connections; one more is answered 503 and closed at once.
pub const CONNECTIONS_MAX: usize = 512;
/// Requests parked at once (long-polls and requests waiting on the driver); beyond, 503.
/// `POST /terminate` is parked whatever the count.
pub const PARKED_MAX: usize = 256;
/// The request line (method, target, version): 414 beyond.
pub const REQUEST_LINE_BYTES_MAX: usize = 8 * 1024;
/// The request line and headers together: 431 beyond.
pub const HEAD_BYTES_MAX: usize = 32 * 1024;
/// Headers of one request: 431 beyond.
pub const HEADERS_MAX: usize = 100;
/// One request's body: 413 beyond (read from `Content-Length`, before the body is read).
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bodies being received, all connections together: 503 beyond, so that many connections
/// cannot each hold a large body.
pub const BODIES_BYTES_MAX: usize = 64 * 1024 * 1024;
/// From a request's first byte to the end of its head: 408 and closed beyond (logged).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// From the end of a request's head to the end of its body: 408 and closed beyond (logged).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection without a request in progress is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A response not taken by the client within this is dropped with its connection (logged).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a streamed answer (a schema dump) handed to the I/O thread and not yet written,
/// beyond which its producer waits: a slow reader holds this much, and holds pg_dump back.
pub const STREAM_UNSENT_BYTES_MAX: usize = 1024 * 1024;
/// Threads that parse and answer requests (none of them waits).
pub const THREADS: usize = 4;
/// Requests read and waiting for a thread; beyond, 503.
pub const QUEUE_MAX: usize = 1024;
/// The longest `GET /journal?wait=`.
pub const JOURNAL_WAIT_MAX: Duration = Duration::from_secs(60);
/// The most records one `GET /journal` returns.
pub const JOURNAL_LIMIT_MAX: usize = 10_000;
/// How long a request waits for the driver's answer (`/terminate`, `/configure` wait longer:
/// they answer when the compute gets there).
pub const DRIVER_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// `POST /configure` and `POST /terminate`: the longest wait for the compute to get there.
pub const WAITING_ANSWER_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest `X-Request-Id` taken as given.
pub const REQUEST_ID_BYTES_MAX: usize = 200;
/// Threads of the catalog pool (`http-catalog-N`): Neon's catalog endpoints' SQL and
/// `pg_dump` run there, never on a request thread.
pub const CATALOG_THREADS: usize = 2;
/// Catalog requests waiting for a catalog thread; one more is answered 503 at once.
pub const CATALOG_QUEUE_MAX: usize = 8;
/// The largest schema dump (`GET /database_schema`): read into memory whole, refused (500)
/// beyond, pg_dump killed.
pub const SCHEMA_DUMP_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The longest schema dump: pg_dump killed and 504 beyond.
pub const SCHEMA_DUMP_TIMEOUT: Duration = Duration::from_secs(60);

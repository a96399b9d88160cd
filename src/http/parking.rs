//! Requests that wait, kept with their connection (a `Responder`) and no thread: a
//! `GET /journal?wait=` until the journal grows past its `since`, and every request handed to
//! the driver (`POST /spec`, `/configure`, `/terminate`, `/recover`) until its answer comes.
//! One thread sleeps on the published view's bell (rung by every publish and every answer the
//! driver sends), looks at what is due, and answers it; at its deadline a request gets its
//! timeout answer. Journal reads go back to the request threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::limits::PARKED_MAX;
use super::server::Responder;
use super::{Job, Reply};
use crate::input::ApiAnswer;
use crate::sync::lock;
use crate::view::Published;

/// The longest sleep of the parking thread without a ring (deadlines are looked at then).
const LOOK_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// What a parked request waits for.
#[derive(Debug)]
pub enum Waiting {
    /// The driver's answer, turned into a reply by `reply`.
    Answer {
        answer: Receiver<ApiAnswer>,
        reply: fn(ApiAnswer) -> Reply,
    },
    /// A journal record after `since`.
    Journal { since: u64, limit: usize },
}

/// A parked request.
#[derive(Debug)]
pub struct Parked {
    pub responder: Responder,
    pub request_id: String,
    pub waiting: Waiting,
    pub deadline: Instant,
}

/// The parked requests.
#[derive(Debug)]
pub struct Parking {
    parked: Mutex<Vec<Parked>>,
    published: Arc<Published>,
    /// Where the journal is, for a long-poll answered here when every thread is busy.
    state_dir: PathBuf,
    /// Places taken (parked, or reserved before a driver call).
    count: AtomicUsize,
    /// Parked requests waiting on the driver: the process waits for their answers before it
    /// exits, so that `POST /terminate` gets its answer.
    in_flight: AtomicUsize,
}

impl Parking {
    pub fn new(published: Arc<Published>, state_dir: PathBuf) -> Arc<Parking> {
        Arc::new(Parking {
            parked: Mutex::new(Vec::new()),
            published,
            state_dir,
            count: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Takes a place, if fewer than `PARKED_MAX` are taken (`always`: whatever the count,
    /// for `POST /terminate`).
    pub fn reserve(&self, always: bool) -> bool {
        if always {
            self.count.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        self.count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < PARKED_MAX).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a reserved place that was not used.
    pub fn release(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }

    /// Parks a request in a place `reserve` gave.
    pub fn park(&self, parked: Parked) {
        if matches!(parked.waiting, Waiting::Answer { .. }) {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        lock(&self.parked).push(parked);
        self.published.changes().ring();
    }

    /// Requests parked now.
    pub fn len(&self) -> usize {
        lock(&self.parked).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests waiting on the driver's answer.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Starts the thread that answers what is due; journal reads go to `jobs`.
    pub fn start(self: &Arc<Parking>, jobs: SyncSender<Job>) -> std::io::Result<()> {
        let parking = self.clone();
        std::thread::Builder::new()
            .name("http-parking".into())
            .spawn(move || parking.run(&jobs))?;
        Ok(())
    }

    fn run(&self, jobs: &SyncSender<Job>) {
        let bell = self.published.changes();
        loop {
            let seen = bell.seen();
            let now = Instant::now();
            let seq = self.published.view().seq;
            let (due, next) = self.take_due(now, seq);
            for (parked, answer) in due {
                self.answer(parked, answer, jobs);
            }
            let sleep = next
                .map_or(LOOK_INTERVAL_MAX, |at| at.saturating_duration_since(now))
                .min(LOOK_INTERVAL_MAX);
            bell.wait(seen, sleep);
        }
    }

    /// Takes out what is due (with the driver's answer, if one came), and the next deadline.
    fn take_due(&self, now: Instant, seq: u64) -> (Vec<(Parked, Due)>, Option<Instant>) {
        let mut parked = lock(&self.parked);
        let mut due = Vec::new();
        let mut kept = Vec::with_capacity(parked.len());
        let mut next: Option<Instant> = None;
        for p in parked.drain(..) {
            let why = if p.responder.is_gone() {
                Some(Due::Gone)
            } else {
                match &p.waiting {
                    Waiting::Answer { answer, .. } => match answer.try_recv() {
                        Ok(answer) => Some(Due::Answer(answer)),
                        Err(TryRecvError::Disconnected) => Some(Due::ShuttingDown),
                        Err(TryRecvError::Empty) if now >= p.deadline => Some(Due::Late),
                        Err(TryRecvError::Empty) => None,
                    },
                    Waiting::Journal { since, .. } if seq > *since || now >= p.deadline => {
                        Some(Due::Journal)
                    }
                    Waiting::Journal { .. } => None,
                }
            };
            match why {
                Some(why) => due.push((p, why)),
                None => {
                    next = Some(next.map_or(p.deadline, |n| n.min(p.deadline)));
                    kept.push(p);
                }
            }
        }
        *parked = kept;
        (due, next)
    }

    fn answer(&self, parked: Parked, due: Due, jobs: &SyncSender<Job>) {
        let Parked {
            responder,
            request_id,
            waiting,
            deadline: _,
        } = parked;
        let waited_on_driver = matches!(waiting, Waiting::Answer { .. });
        match (waiting, due) {
            (Waiting::Journal { since, limit }, Due::Journal) => {
                let job = Job::Journal {
                    since,
                    limit,
                    request_id,
                    responder,
                };
                let job = match jobs.try_send(job) {
                    Ok(()) => None,
                    Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Some(job),
                };
                // Every request thread is busy: read it here.
                if let Some(Job::Journal {
                    since,
                    limit,
                    request_id,
                    responder,
                }) = job
                {
                    super::journal_reply(&self.state_dir, &self.published, since, limit)
                        .send(responder, &request_id);
                }
            }
            (_, Due::Gone) => drop(responder),
            (Waiting::Answer { reply, .. }, Due::Answer(answer)) => {
                reply(answer).send(responder, &request_id)
            }
            (_, Due::ShuttingDown) => {
                Reply::error(503, "compute_ctl is shutting down").send(responder, &request_id)
            }
            (_, Due::Late | Due::Journal | Due::Answer(_)) => Reply::error(
                504,
                "no answer from the driver within the request's time".to_string(),
            )
            .send(responder, &request_id),
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
        if waited_on_driver {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Why a parked request is answered now.
#[derive(Debug)]
enum Due {
    Answer(ApiAnswer),
    /// The driver is gone (its end of the channel dropped).
    ShuttingDown,
    /// Its deadline passed.
    Late,
    /// A journal long-poll: records came, or its wait is over.
    Journal,
    /// The client hung up.
    Gone,
}

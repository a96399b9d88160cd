//! Admission: whether an offered spec becomes the desired one. The rules every phase that takes
//! a spec shares: a retried request gets its first answer, `If-Match` must name the desired
//! generation, a spec identical to the desired one changes nothing, anything else is the next
//! generation. Which phases take a spec at all is each phase's own rule (its `SpecOffered`
//! arm).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::phase::{Ctx, PhaseName};
use crate::spec_ref::SpecRef;

/// How many accepted request ids are remembered for retries; the oldest is forgotten first.
pub const REQUESTS_REMEMBERED_MAX: usize = 4096;

/// A spec someone asks to make desired. The core sees its hash, not the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecOffer {
    /// `sha256:<hex>` of the spec's canonical JSON.
    pub hash: String,
    /// `If-Match`: the desired generation the sender believes current.
    pub if_match: Option<u64>,
    /// `X-Request-Id` of the request that offered it, if a request did.
    pub request_id: Option<String>,
    /// The seq its `spec_accepted` record gets if it is accepted: the driver journals that
    /// record first in the input's batch.
    pub seq: u64,
    /// Whether the spec's data comes from the embedded default (a fresh `initdb`): only such
    /// a spec can use a cluster prepared in `empty` (`--prepare`).
    #[serde(default)]
    pub embedded: bool,
}

/// What the offer's sender is told when the phase takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum SpecAnswer {
    /// A new generation, journaled at `seq` (HTTP 202).
    Accepted { generation: u64, seq: u64 },
    /// The spec is the desired one already, or the request was answered before (HTTP 200 for
    /// an identical spec, the first answer again for a retried request).
    Identical { generation: u64, seq: u64 },
    /// The request id was seen before: its first answer, whatever the phase is now.
    Repeated { generation: u64, seq: u64 },
}

impl SpecAnswer {
    /// The generation the answer names.
    pub fn generation(self) -> u64 {
        match self {
            SpecAnswer::Accepted { generation, .. }
            | SpecAnswer::Identical { generation, .. }
            | SpecAnswer::Repeated { generation, .. } => generation,
        }
    }
}

/// What the journal tells a new process run about earlier ones: the desired spec and the
/// seq of its `spec_accepted` record, and the requests accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recalled {
    pub desired: Option<(SpecRef, u64)>,
    pub requests: RequestLog,
    /// The spec the postmaster an earlier run left may still serve (the last one confirmed
    /// running, with no stop or wipe after it).
    pub adoptable: Option<SpecRef>,
    /// The attempts the start-up phases of the last run reached, for the generation named,
    /// if that run never got to `running`.
    pub resumed: Option<(u64, Vec<(PhaseName, u32)>)>,
}

/// One accepted request, for a retry with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedAt {
    pub generation: u64,
    pub seq: u64,
}

/// The accepted request ids, bounded: the newest `REQUESTS_REMEMBERED_MAX` are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    by_id: BTreeMap<String, AcceptedAt>,
    order: VecDeque<String>,
}

impl RequestLog {
    pub fn get(&self, request_id: &str) -> Option<AcceptedAt> {
        self.by_id.get(request_id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Remembers `request_id`, forgetting the oldest beyond the limit.
    pub fn insert(&mut self, request_id: String, at: AcceptedAt) {
        if self.by_id.insert(request_id.clone(), at).is_none() {
            self.order.push_back(request_id);
        }
        while self.order.len() > REQUESTS_REMEMBERED_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
        debug_assert_eq!(self.by_id.len(), self.order.len());
    }
}

/// The verdict on an offer, before the phase hears of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answer without changing anything.
    Answer(SpecAnswer),
    Refuse(Rejection),
    /// The next generation: the phase takes it as `SpecAccepted`.
    Accept(SpecRef),
}

/// The shared rules, in order: retried request, `If-Match`, identical spec, next generation.
pub(crate) fn judge(ctx: &Ctx, offer: &SpecOffer, phase: PhaseName) -> Verdict {
    if let Some(at) = offer
        .request_id
        .as_deref()
        .and_then(|id| ctx.requests.get(id))
    {
        return Verdict::Answer(SpecAnswer::Repeated {
            generation: at.generation,
            seq: at.seq,
        });
    }
    let current = ctx.desired.as_ref().map_or(0, |d| d.generation);
    if let Some(expected) = offer.if_match {
        if expected != current {
            return Verdict::Refuse(Rejection::GenerationMismatch {
                phase,
                expected,
                desired: current,
            });
        }
    }
    if let Some(desired) = &ctx.desired {
        if desired.hash == offer.hash {
            return Verdict::Answer(SpecAnswer::Identical {
                generation: desired.generation,
                seq: ctx.desired_seq,
            });
        }
    }
    Verdict::Accept(SpecRef {
        generation: current + 1,
        hash: offer.hash.clone(),
    })
}

/// After the phase took the accepted spec: remember where it was journaled, and for whom.
pub(crate) fn remember(ctx: &mut Ctx, offer: SpecOffer, generation: u64) -> SpecAnswer {
    ctx.desired_seq = offer.seq;
    if let Some(id) = offer.request_id {
        let seq = offer.seq;
        ctx.requests.insert(id, AcceptedAt { generation, seq });
    }
    SpecAnswer::Accepted {
        generation,
        seq: offer.seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_log_forgets_the_oldest_beyond_its_limit() {
        let mut log = RequestLog::default();
        for n in 0..(REQUESTS_REMEMBERED_MAX as u64 + 10) {
            let at = AcceptedAt {
                generation: n,
                seq: n,
            };
            log.insert(format!("r{n}"), at);
        }
        assert_eq!(log.len(), REQUESTS_REMEMBERED_MAX);
        assert!(log.get("r0").is_none());
        assert!(log.get("r9").is_none());
        assert_eq!(log.get("r10").map(|a| a.generation), Some(10));
        let last = format!("r{}", REQUESTS_REMEMBERED_MAX + 9);
        assert!(log.get(&last).is_some());
    }
}

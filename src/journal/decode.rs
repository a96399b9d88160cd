//! Decoding a record's JSON fast, without the buffering that `#[serde(flatten)]` costs.
//!
//! `Record`'s derived `Deserialize` (a flattened, internally tagged body) first parses every
//! field into serde's generic `Content` tree, then deserializes the body from that tree: an
//! allocation per key and value, twice the work. Replay has to run at a million records a
//! second, so the scanner decodes records here instead: the header fields are read as they
//! come, and once `kind` is known the remaining entries are handed straight to that kind's
//! derived `Deserialize`, streaming from the parser.
//!
//! That needs `kind` before the body's fields, which is how the writer orders them. Any other
//! order (a hand-edited line, a future writer) makes this fast path fail, and the derived
//! decoder, the reference, decides instead: the fast path changes speed, never the result.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use super::record::{
    DriftRecord, Record, RecordBody, SpecAcceptedRecord, StartRecord, StepFinishedRecord,
    StepStartedRecord, TransitionRecord,
};

/// Decodes one record's JSON (the bytes after the checksum and space).
pub(crate) fn decode_record(json: &[u8]) -> Result<Record, serde_json::Error> {
    match decode_fast(json) {
        Ok(record) => Ok(record),
        Err(_) => serde_json::from_slice(json),
    }
}

fn decode_fast(json: &[u8]) -> Result<Record, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let record = (&mut de).deserialize_map(RecordVisitor)?;
    de.end()?;
    Ok(record)
}

/// A key of the record's object: one of the header fields, `kind`, or a body field.
enum Key<'de> {
    Seq,
    Epoch,
    Ts,
    MonoMs,
    Kind,
    Body(Cow<'de, str>),
}

impl<'de> Key<'de> {
    fn of(name: &str) -> Option<Key<'de>> {
        Some(match name {
            "seq" => Key::Seq,
            "epoch" => Key::Epoch,
            "ts" => Key::Ts,
            "mono_ms" => Key::MonoMs,
            "kind" => Key::Kind,
            _ => return None,
        })
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::of(v).unwrap_or(Key::Body(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::of(v).unwrap_or_else(|| Key::Body(Cow::Owned(v.to_owned()))))
    }
}

/// The header fields, filled in whatever order they come.
#[derive(Default)]
struct Head {
    seq: Option<u64>,
    epoch: Option<u64>,
    ts: Option<String>,
    mono_ms: Option<u64>,
}

impl Head {
    /// Reads the value of a header key; `false` for `kind` and body keys, which it leaves.
    fn take<'de, A: MapAccess<'de>>(
        &mut self,
        key: &Key<'de>,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        fn once<T, E: de::Error>(
            slot: &mut Option<T>,
            value: T,
            name: &'static str,
        ) -> Result<(), E> {
            if slot.replace(value).is_some() {
                return Err(E::duplicate_field(name));
            }
            Ok(())
        }
        match key {
            Key::Seq => once(&mut self.seq, map.next_value()?, "seq")?,
            Key::Epoch => once(&mut self.epoch, map.next_value()?, "epoch")?,
            Key::Ts => once(&mut self.ts, map.next_value()?, "ts")?,
            Key::MonoMs => once(&mut self.mono_ms, map.next_value()?, "mono_ms")?,
            Key::Kind | Key::Body(_) => return Ok(false),
        }
        Ok(true)
    }
}

/// The record kinds, as `kind` names them.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Start,
    SpecAccepted,
    Transition,
    StepStarted,
    StepFinished,
    Drift,
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Record;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a journal record object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
        let mut head = Head::default();
        loop {
            let Some(key) = map.next_key_seed(KeySeed)? else {
                return Err(A::Error::missing_field("kind"));
            };
            if head.take(&key, &mut map)? {
                continue;
            }
            if let Key::Body(name) = key {
                // A body field before `kind`: not the writer's order, leave it to the
                // reference decoder.
                return Err(A::Error::custom(format_args!(
                    "field `{name}` comes before `kind`"
                )));
            }
            let kind: Kind = map.next_value()?;
            let mut rest = BodyMap {
                map: &mut map,
                head: &mut head,
            };
            let body = match kind {
                Kind::Start => {
                    RecordBody::Start(StartRecord::deserialize(BodyDeserializer(&mut rest))?)
                }
                Kind::SpecAccepted => RecordBody::SpecAccepted(SpecAcceptedRecord::deserialize(
                    BodyDeserializer(&mut rest),
                )?),
                Kind::Transition => RecordBody::Transition(TransitionRecord::deserialize(
                    BodyDeserializer(&mut rest),
                )?),
                Kind::StepStarted => RecordBody::StepStarted(StepStartedRecord::deserialize(
                    BodyDeserializer(&mut rest),
                )?),
                Kind::StepFinished => RecordBody::StepFinished(StepFinishedRecord::deserialize(
                    BodyDeserializer(&mut rest),
                )?),
                Kind::Drift => {
                    RecordBody::Drift(DriftRecord::deserialize(BodyDeserializer(&mut rest))?)
                }
            };
            // A derived struct reads to the end of the map; this only guards that assumption.
            while rest.next_key::<IgnoredAny>()?.is_some() {
                rest.next_value::<IgnoredAny>()?;
            }
            return Ok(Record {
                seq: head.seq.ok_or_else(|| A::Error::missing_field("seq"))?,
                epoch: head.epoch.ok_or_else(|| A::Error::missing_field("epoch"))?,
                ts: head.ts.ok_or_else(|| A::Error::missing_field("ts"))?,
                mono_ms: head
                    .mono_ms
                    .ok_or_else(|| A::Error::missing_field("mono_ms"))?,
                body,
            });
        }
    }
}

/// The entries after `kind`: body fields pass through to the body's decoder, header fields
/// that come late are taken out on the way.
struct BodyMap<'a, A> {
    map: &'a mut A,
    head: &'a mut Head,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for BodyMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.map.next_key_seed(KeySeed)? else {
                return Ok(None);
            };
            if self.head.take(&key, self.map)? {
                continue;
            }
            return match key {
                Key::Body(Cow::Borrowed(name)) => seed
                    .deserialize(BorrowedStrDeserializer::<A::Error>::new(name))
                    .map(Some),
                Key::Body(Cow::Owned(name)) => seed
                    .deserialize(StringDeserializer::<A::Error>::new(name))
                    .map(Some),
                Key::Kind => Err(A::Error::duplicate_field("kind")),
                // Taken by `head.take` above.
                Key::Seq | Key::Epoch | Key::Ts | Key::MonoMs => {
                    Err(A::Error::custom("header field not taken"))
                }
            };
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// Presents the remaining entries as a map to a body's derived `Deserialize`.
struct BodyDeserializer<'a, 'b, A>(&'a mut BodyMap<'b, A>);

impl<'de, A: MapAccess<'de>> Deserializer<'de> for BodyDeserializer<'_, '_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::journal::record::{Cause, SpecSource, TornTail, UnfinishedStep};
    use states::{ErrorKind, EventName, PhaseName, StepError, StepId, StepName};

    fn samples() -> Vec<Record> {
        let bodies = vec![
            RecordBody::Start(StartRecord {
                format: 1,
                version: "0.1.0".into(),
                pid: 42,
                pgdata: "/pg".into(),
                torn_tail: Some(TornTail {
                    segment: "00000000000000000001.log".into(),
                    offset: 10,
                    bytes: 3,
                    reason: "cut \"short\"".into(),
                }),
                unfinished_steps: vec![UnfinishedStep {
                    seq: 3,
                    epoch: 1,
                    step: StepName::InitPgdata,
                    id: StepId(1),
                    policy: "redo_from_scratch".into(),
                }],
            }),
            RecordBody::SpecAccepted(SpecAcceptedRecord {
                generation: 2,
                spec_hash: "sha256:ab".into(),
                source: SpecSource::Http,
                request_id: Some("r-\u{e9}\n".into()),
                ignored_fields: vec!["a.b".into()],
            }),
            RecordBody::Transition(TransitionRecord {
                from: PhaseName::Init,
                to: PhaseName::Failed,
                cause: Cause {
                    event: EventName::StepFailed,
                    request_id: None,
                    step: Some(StepName::InitPgdata),
                    source: None,
                },
                generation: Some(1),
                spec_hash: None,
                attempt: 2,
                duration_ms: 12,
                error: Some(StepError::new(
                    PhaseName::Init,
                    StepName::InitPgdata,
                    ErrorKind::Io,
                    "cannot remove /pg",
                )),
            }),
            RecordBody::StepStarted(StepStartedRecord {
                id: StepId(7),
                step: StepName::FetchBasebackup,
                generation: None,
                detail: Some("lsn 0/16B3748".into()),
            }),
            RecordBody::StepFinished(StepFinishedRecord {
                id: StepId(7),
                step: StepName::FetchBasebackup,
                ok: true,
                duration_ms: 812,
                output: Some(serde_json::json!({"bytes": 123, "nested": {"kind": "x", "seq": 1}})),
                error: None,
            }),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Record {
                seq: i as u64 + 1,
                epoch: 3,
                ts: "2026-11-25T01:02:03.456Z".into(),
                mono_ms: 1000 + i as u64,
                body,
            })
            .collect()
    }

    /// The fast path and the derived decoder agree, on success and on failure.
    fn check_same(json: &str) {
        let reference = serde_json::from_slice::<Record>(json.as_bytes());
        let fast = decode_record(json.as_bytes());
        match (&reference, &fast) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{json}"),
            (Err(_), Err(_)) => {}
            _ => panic!("decoders disagree on {json}: {reference:?} vs {fast:?}"),
        }
    }

    #[test]
    fn the_writers_order_takes_the_fast_path_and_round_trips() {
        for record in samples() {
            let json = serde_json::to_string(&record).unwrap();
            assert!(
                json.starts_with(&format!("{{\"seq\":{},\"epoch\":", record.seq)),
                "{json}"
            );
            assert_eq!(decode_fast(json.as_bytes()).unwrap(), record, "{json}");
            check_same(&json);
        }
    }

    #[test]
    fn any_key_order_decodes_as_the_derived_decoder_does() {
        for record in samples() {
            let value = serde_json::to_value(&record).unwrap();
            let map = value.as_object().unwrap();
            let keys: Vec<&String> = map.keys().collect();
            // Rotations and the reverse of the key list: kind last, header last, mixed.
            for rotate in 0..keys.len() {
                for reverse in [false, true] {
                    let mut order: Vec<&String> = keys.clone();
                    order.rotate_left(rotate);
                    if reverse {
                        order.reverse();
                    }
                    let parts: Vec<String> = order
                        .iter()
                        .map(|k| format!("{}:{}", serde_json::to_string(k).unwrap(), map[*k]))
                        .collect();
                    let json = format!("{{{}}}", parts.join(","));
                    check_same(&json);
                    assert_eq!(decode_record(json.as_bytes()).unwrap(), record, "{json}");
                }
            }
        }
    }

    #[test]
    fn malformed_records_fail_as_they_do_in_the_derived_decoder() {
        let base = r#""epoch":1,"ts":"t","mono_ms":0"#;
        let cases = [
            String::new(),
            "{}".into(),
            "[]".into(),
            "null".into(),
            format!(r#"{{"seq":1,{base}}}"#),
            format!(r#"{{"seq":1,{base},"kind":"nope"}}"#),
            format!(r#"{{"seq":1,{base},"kind":"step_started"}}"#),
            format!(r#"{{"seq":1,"seq":2,{base},"kind":"step_started","id":1,"step":"exit"}}"#),
            format!(r#"{{"seq":1,{base},"kind":"step_started","id":1,"step":"exit","seq":2}}"#),
            format!(
                r#"{{"seq":1,{base},"kind":"step_started","kind":"start","id":1,"step":"exit"}}"#
            ),
            format!(r#"{{"seq":-1,{base},"kind":"step_started","id":1,"step":"exit"}}"#),
            format!(r#"{{"seq":"1",{base},"kind":"step_started","id":1,"step":"exit"}}"#),
            format!(r#"{{{base},"kind":"step_started","id":1,"step":"exit"}}"#),
            format!(r#"{{"seq":1,{base},"kind":"step_started","id":1,"step":"exit"}} x"#),
            format!(
                r#"{{"seq":1,{base},"kind":"step_started","id":1,"step":"exit","extra":[1,{{}}]}}"#
            ),
            format!(r#"{{"s\u0065q":1,{base},"kind":"step_started","id":1,"st\u0065p":"exit"}}"#),
            format!(r#"{{"seq":1,{base},"kind":"step_started","id":1,"step":"exit""#),
        ];
        for json in &cases {
            check_same(json);
        }
        // The unknown field is ignored and escaped keys are read as their text.
        assert!(decode_record(cases[14].as_bytes()).is_ok());
        assert!(decode_record(cases[15].as_bytes()).is_ok());
    }
}

//! Whether an upstream `Replica` whose Postgres is gone may restart on its own PGDATA instead
//! of copying the whole database again: PGDATA is ours and intact, of the upstream's system,
//! and the upstream still has the WAL the standby will ask for. A `Primary` branch and Neon's
//! storage always start fresh (a branch is a copy taken now; Neon's compute holds no data).

use std::path::Path;

use serde_json::json;
use states::{PhaseName, StepName};

use super::standby::controldata;
use super::upstream::{on_upstream, Source};
use crate::spec::{ComputeMode, ParsedSpec, Storage};
use crate::step_env::StepCtx;

/// Why PGDATA is kept (`Ok`, for the journal), or why it is copied afresh (`Err`).
pub fn replica_reusable(ctx: &StepCtx<'_>, spec: &ParsedSpec) -> Result<serde_json::Value, String> {
    let env = ctx.env;
    if !matches!(
        spec.storage,
        Storage::Upstream {
            mode: ComputeMode::Replica,
            ..
        }
    ) {
        return Err(format!(
            "a {} compute starts from a fresh copy",
            spec.spec.mode.as_str()
        ));
    }
    crate::pgdata::owned_by(&env.pgdata, &env.state_dir)?;
    if !env.pgdata.join("PG_VERSION").is_file() {
        return Err("PGDATA holds no data directory".into());
    }
    let control = controldata(&env.binaries, &env.pgdata, ctx.cancel)
        .map_err(|e| format!("its control file cannot be read: {e:#}"))?;
    let system_id = control
        .lines()
        .find_map(|l| l.strip_prefix("Database system identifier:"))
        .map(|v| v.trim().to_string())
        .ok_or("pg_controldata names no system identifier")?;
    let needed = newest_segment(&env.pgdata.join("pg_wal"))
        .ok_or("its pg_wal holds no WAL segment to resume from")?;

    let source =
        Source::of(spec, env, PhaseName::Init, StepName::InitPgdata).map_err(|e| e.message)?;
    let slot = source.slot.map(str::to_string);
    let answer = on_upstream(&source, ctx.cancel, move |client| {
        let upstream_id: String = client
            .query_one(
                "SELECT system_identifier::text FROM pg_control_system()",
                &[],
            )?
            .get(0);
        // The WAL the upstream keeps: a slot's promise, else the oldest segment it has.
        let kept = match &slot {
            Some(name) => client
                .query_opt(
                    "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                    &[name],
                )?
                .map(|row| Kept::Slot(row.get::<_, Option<String>>(0))),
            None => None,
        };
        let kept = match kept {
            Some(kept) => kept,
            None => match client.query_one(
                "SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'",
                &[],
            ) {
                Ok(row) => Kept::Oldest(row.get::<_, Option<String>>(0)),
                Err(e) => Kept::Unknown(crate::postgres::error::describe(&e)),
            },
        };
        Ok((upstream_id, kept))
    })
    .map_err(|e| {
        e.into_step_error(PhaseName::Init, StepName::InitPgdata, &source)
            .message
    })?;
    let (upstream_id, kept) = answer;
    if upstream_id != system_id {
        return Err(format!(
            "its system identifier {system_id} is not the upstream's {upstream_id}"
        ));
    }
    match kept {
        Kept::Slot(status) if status.as_deref() != Some("lost") => {}
        Kept::Slot(status) => {
            return Err(format!(
                "the upstream's slot lost the WAL it kept (wal_status {status:?})"
            ))
        }
        Kept::Oldest(Some(oldest)) if segment_number(&oldest) <= segment_number(&needed) => {}
        Kept::Oldest(oldest) => {
            return Err(format!(
                "the upstream no longer has the WAL it needs from segment {needed} (its oldest is {oldest:?})"
            ))
        }
        Kept::Unknown(why) => {
            return Err(format!(
                "cannot tell whether the upstream still has the WAL from segment {needed} ({why}): grant pg_monitor to the replication role, or give upstream_slot_name"
            ))
        }
    }
    Ok(json!({
        "kept": true,
        "reason": format!("an intact standby of system {system_id}; the upstream still has its WAL from segment {needed}"),
    }))
}

/// What the upstream says of the WAL it keeps.
#[derive(Debug)]
enum Kept {
    /// Through the spec's slot: its `wal_status` (`lost` means gone).
    Slot(Option<String>),
    /// Without a slot: its oldest segment in `pg_wal`.
    Oldest(Option<String>),
    /// It would not say (no `pg_monitor`).
    Unknown(String),
}

/// The newest WAL segment file in `pg_wal`: where the standby resumes streaming.
fn newest_segment(pg_wal: &Path) -> Option<String> {
    std::fs::read_dir(pg_wal)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .max_by_key(|name| segment_number(name))
}

/// The segment's position, timeline aside: its last 16 hex digits (log and segment).
fn segment_number(name: &str) -> u64 {
    u64::from_str_radix(name.get(8..).unwrap_or(""), 16).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_compare_by_position_not_timeline() {
        assert!(
            segment_number("000000020000000000000003") > segment_number("000000010000000000000002")
        );
        assert_eq!(segment_number("000000010000000100000000"), 1 << 32);
    }
}

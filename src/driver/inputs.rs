//! Each kind of input, turned into the core's events and the facts that come with them: API
//! calls (and their typed answers), finished steps, the postmaster's exit, signals.

use std::sync::Arc;

use states::{DriftVerdict, Event, Now, PhaseName, ShutdownMode, StepName};

use super::records::{self, Origin};
use super::waiters::Waiting;
use super::{Driver, Exit, Facts, Handled};
use crate::clock::rfc3339_ms;
use crate::input::{ApiAnswer, ApiCall, ApiRequest, Input, SignalKind, StepExtra, StepReport};
use crate::journal::{DriftRecord, RecordBody, SpecSource, StepFinishedRecord};
use crate::postgres::drift::Difference;
use crate::postgres::monitor::DriftReport;
use crate::spec::{ComputeMode, ParsedSpec, SpecFile, Storage};
use states::SpecOffer;

impl Driver {
    /// One input, decided and done; `Err` ends the loop.
    pub fn on_input(&mut self, input: Input, now: Now) -> Result<(), Exit> {
        let result = match input {
            Input::Api(call) => self.on_api(call, now),
            Input::StepStarted { id } => {
                let event = Event::StepStarted { id };
                if let Handled::Refused(why) =
                    self.handle(event, Origin::default(), now, Facts::default())?
                {
                    log::debug!("step {id} began late: {why}");
                }
                Ok(())
            }
            Input::StepFinished(report) => self.on_step_finished(report, now),
            Input::PostmasterExited {
                pid,
                status,
                shut_down,
            } => {
                if self.phase.postmaster() != Some(pid) {
                    log::info!("postgres (pid {pid}) exited with {status}; no phase waits for it");
                    return Ok(());
                }
                let cluster = if shut_down {
                    "pg_control says shut down"
                } else {
                    "pg_control does not say shut down"
                };
                // The decision is the core's (`stopped_from_outside`); asked here only to say
                // in the log and the transition record's cause which one it is.
                let origin = if self.phase.name() == PhaseName::Terminating {
                    log::info!("postgres (pid {pid}) stopped as asked, with {status}");
                    Origin::default()
                } else if states::stopped_from_outside(status, shut_down) {
                    log::warn!(
                        "postgres (pid {pid}) was stopped from outside ({status}, {cluster}): exiting"
                    );
                    Origin::source(format!(
                        "postmaster pid {pid} stopped from outside: {status}, {cluster}"
                    ))
                } else {
                    log::error!(
                        "postgres (pid {pid}) exited unexpectedly with {status}, {cluster}"
                    );
                    Origin::source(format!(
                        "postmaster pid {pid} exited unexpectedly: {status}, {cluster}"
                    ))
                };
                let event = Event::PostmasterExited { status, shut_down };
                if let Handled::Refused(why) = self.handle(event, origin, now, Facts::default())? {
                    log::warn!("the postmaster's exit was refused: {why}");
                }
                Ok(())
            }
            Input::Signal(signal) => self.on_signal(signal, now),
            Input::Activity { wall_ms } => {
                let last = self
                    .shown
                    .last_active_ms
                    .map_or(wall_ms, |t| t.max(wall_ms));
                self.shown.last_active_ms = Some(last);
                self.publish();
                Ok(())
            }
            Input::Progress(progress) => {
                self.shown.progress = Some(progress);
                self.publish();
                Ok(())
            }
            Input::Sidecar(view) => {
                self.shown.sidecar = Some(view);
                self.publish();
                Ok(())
            }
            Input::Drift(report) => self.on_drift(report, now),
        };
        self.check_invariants();
        result
    }

    fn on_signal(&mut self, signal: SignalKind, now: Now) -> Result<(), Exit> {
        let name = match signal {
            SignalKind::Terminate => "SIGTERM",
            SignalKind::Interrupt => "SIGINT",
            SignalKind::Reload => return crate::notify::reload(|| self.reload(now)),
            SignalKind::Upgrade => return self.upgrade(now),
        };
        log::info!("{name}: terminating");
        self.shown.terminate_mode.get_or_insert(ShutdownMode::Fast);
        let event = Event::Terminate {
            mode: ShutdownMode::Fast,
        };
        // Refused only in `terminated`, which is on its way out anyway.
        self.handle(event, Origin::source(name), now, Facts::default())?;
        Ok(())
    }

    /// SIGUSR2: re-execute the binary file compute_ctl was started from, with the same
    /// arguments; the new process opens the journal (a new epoch) and adopts Postgres. The
    /// intent is journaled first; a failed exec is journaled, and this process goes on.
    fn upgrade(&mut self, now: Now) -> Result<(), Exit> {
        let Some((binary, args)) = self.reexec.clone() else {
            log::warn!("SIGUSR2: the binary to re-execute is unknown");
            return Ok(());
        };
        let detail = format!("re-execute {} keeping postgres", binary.display());
        log::info!("SIGUSR2: {detail}");
        let id = states::StepId(0);
        let started = RecordBody::StepStarted(crate::journal::StepStartedRecord {
            id,
            step: StepName::Reexec,
            generation: self.phase.ctx().desired.as_ref().map(|d| d.generation),
            detail: Some(detail),
        });
        self.append(vec![started], now)?;
        let error = self.world.reexec(&binary, &args);
        let message = format!("cannot re-execute {}: {error}", binary.display());
        log::error!("SIGUSR2: {message}");
        let failed = RecordBody::StepFinished(StepFinishedRecord {
            id,
            step: StepName::Reexec,
            ok: false,
            duration_ms: 0,
            output: None,
            error: Some(states::StepError::new(
                self.phase.name(),
                StepName::Reexec,
                states::ErrorKind::Io,
                message,
            )),
        });
        self.append(vec![failed], now)?;
        self.publish();
        Ok(())
    }

    /// SIGHUP: the `-S` file again, admitted like any spec.
    fn reload(&mut self, now: Now) -> Result<(), Exit> {
        let Some(path) = self.spec_file.clone() else {
            log::warn!("SIGHUP: no -S/--spec file to re-read");
            return Ok(());
        };
        let shown = path.display();
        let spec = match self.admission.admit_config_file(&path) {
            Ok(SpecFile::Spec(admitted)) => Arc::new(admitted.spec),
            Ok(SpecFile::NoSpec { compute_ctl_config }) => {
                // Neon's envelope with a null spec: the desired spec stays; the API's keys of
                // its compute_ctl_config still take effect, as at start.
                log::info!(
                    "SIGHUP: {shown} holds no spec (spec is null): nothing to apply, the \
                     desired spec stays (generation {})",
                    self.phase
                        .ctx()
                        .desired
                        .as_ref()
                        .map_or_else(|| "none".to_string(), |d| d.generation.to_string())
                );
                if let Some(config) = &compute_ctl_config {
                    self.world.compute_ctl_config_taken(config);
                }
                return Ok(());
            }
            Err(e) => {
                log::error!("SIGHUP: not accepted: {e}");
                return Ok(());
            }
        };
        match self.offer(spec, SpecSource::Reload, None, None, now)? {
            Handled::Done(answer) => log::info!("SIGHUP: {shown} re-read: {answer:?}"),
            Handled::Refused(why) => log::error!("SIGHUP: {shown} not accepted: {why}"),
            Handled::NotStored(why) => log::error!("SIGHUP: {shown} not accepted: {why}"),
        }
        Ok(())
    }

    fn on_api(&mut self, call: ApiCall, now: Now) -> Result<(), Exit> {
        let ApiCall {
            request_id,
            request,
            reply,
        } = call;
        let _log = crate::logging::scope(None, Some(&request_id));
        let (handled, answer) = match request {
            ApiRequest::PostSpec { spec, if_match } => {
                let handled = self.offer(spec, SpecSource::Http, Some(request_id), if_match, now);
                let answer = spec_answer(&handled);
                (handled, answer)
            }
            ApiRequest::Configure { spec } => {
                let handled = self.offer(spec, SpecSource::Http, Some(request_id), None, now);
                if let Ok(Handled::Done(Some(answer))) = &handled {
                    let generation = answer.generation();
                    self.waiters.park(Waiting::Configure { generation }, reply);
                    self.answer_waiters();
                    return Ok(());
                }
                let answer = spec_answer(&handled);
                (handled, answer)
            }
            ApiRequest::Terminate { mode } => {
                self.shown.terminate_mode.get_or_insert(mode);
                self.waiters.park(Waiting::Terminate, reply);
                let origin = Origin::request(request_id, "POST /terminate");
                // Refused only in `terminated`, where the waiter is answered at once.
                self.handle(Event::Terminate { mode }, origin, now, Facts::default())?;
                self.answer_waiters();
                return Ok(());
            }
            ApiRequest::Promote { wal_flush_lsn } => {
                let is_replica = self.desired_spec().is_some_and(|spec| {
                    matches!(
                        spec.storage,
                        Storage::Upstream {
                            mode: ComputeMode::Replica,
                            ..
                        }
                    )
                });
                if !is_replica {
                    let error = match self.desired_spec() {
                        Some(spec) => format!(
                            "only an upstream Replica can be promoted; this compute's storage is {} ({})",
                            spec.storage.kind(),
                            spec.storage.mode().as_str()
                        ),
                        None => "the compute has no spec yet".to_string(),
                    };
                    let _ = reply.send(ApiAnswer::NotPromoted { error });
                    self.published.answered();
                    return Ok(());
                }
                let origin = Origin::request(request_id, "POST /promote");
                let event = Event::Promote { wal_flush_lsn };
                match self.handle(event, origin, now, Facts::default())? {
                    Handled::Refused(why) => {
                        let error = why.to_string();
                        let _ = reply.send(ApiAnswer::NotPromoted { error });
                        self.published.answered();
                    }
                    Handled::Done(_) | Handled::NotStored(_) => {
                        self.shown.promotion_failed = None;
                        self.waiters.park(Waiting::Promote, reply);
                        self.answer_waiters();
                    }
                }
                return Ok(());
            }
            ApiRequest::Recover => {
                let origin = Origin::request(request_id, "POST /recover");
                let handled = self.handle(Event::Recover, origin, now, Facts::default());
                let answer = match &handled {
                    Ok(Handled::Refused(why)) => ApiAnswer::Refused(why.clone()),
                    Ok(_) => ApiAnswer::Recovering {
                        phase: self.phase.name(),
                    },
                    Err(_) => journal_failed(),
                };
                (handled, answer)
            }
        };
        // The caller may have given up (a closed connection): nothing to do.
        let _ = reply.send(answer);
        self.published.answered();
        handled.map(|_| ())
    }

    fn on_step_finished(&mut self, report: StepReport, now: Now) -> Result<(), Exit> {
        let StepReport {
            id,
            step,
            result,
            duration_ms,
            detail,
            extra,
        } = report;
        let _log = crate::logging::scope(Some(step.as_str()), None);
        match &result {
            Ok(_) => log::info!("step {step} {id} finished in {duration_ms} ms"),
            Err(e) => log::warn!("step {step} {id} failed after {duration_ms} ms: {e}"),
        }
        if result.is_ok() {
            self.record_timing(step, duration_ms, now);
        }
        if matches!(step, StepName::FetchBasebackup | StepName::SyncSafekeepers) {
            self.shown.progress = None;
        }
        if let (StepName::PromotePostgres, Err(e)) = (step, &result) {
            // A newer spec may be applied next: `POST /promote` still failed.
            self.shown.promotion_failed = Some(e.to_string());
        }
        let mut fetched = None;
        match extra {
            StepExtra::None => {}
            StepExtra::Applied { pending_restart } => self.shown.pending_restart = pending_restart,
            StepExtra::Fetched(spec) => fetched = Some(Arc::new(*spec)),
        }
        let finished = RecordBody::StepFinished(StepFinishedRecord {
            id,
            step,
            ok: result.is_ok(),
            duration_ms,
            output: records::step_finished_output(&result, detail),
            error: result.as_ref().err().cloned(),
        });
        let origin = Origin {
            step: Some(step),
            ..Origin::default()
        };
        let facts = Facts {
            records: vec![finished],
            offered: None,
        };
        if let Handled::Refused(why) =
            self.handle(Event::StepFinished { id, result }, origin, now, facts)?
        {
            log::info!("step {step} {id} reported late: {why}");
        }
        crate::failpoint!(format!("step.finished.{step}"));
        if let Some(spec) = fetched {
            match self.offer(spec, SpecSource::ControlPlane, None, None, now)? {
                Handled::Done(_) => {}
                Handled::Refused(why) => log::error!("the control plane's spec is refused: {why}"),
                Handled::NotStored(why) => {
                    log::error!("the control plane's spec is refused: {why}")
                }
            }
        }
        Ok(())
    }

    /// A drift check's result: the list kept with each item's `since`, a `drift` record when
    /// it changed (or a repair did not remove it), then the core's decision (a repair).
    fn on_drift(&mut self, report: DriftReport, now: Now) -> Result<(), Exit> {
        if report.watch != self.drift_watch || self.phase.name() != PhaseName::Running {
            log::debug!("a drift check of watch #{} reported late", report.watch);
            return Ok(());
        }
        self.shown.drift_check_us = Some(report.duration_us);
        self.shown.drift_checks += 1;
        let found = match report.found {
            Ok(found) => found,
            Err(why) => {
                log::warn!("the drift check failed: {why}");
                return Ok(());
            }
        };
        let fingerprint = found.fingerprint();
        let verdict = self.phase.ctx().drift_verdict(fingerprint, now);
        let since = rfc3339_ms(now.wall_ms);
        let items: Vec<Difference> = found
            .items
            .into_iter()
            .map(|mut item| {
                let seen = self.shown.drift.iter().find(|d| d.key() == item.key());
                item.since = Some(seen.and_then(|d| d.since.clone()).unwrap_or(since.clone()));
                item
            })
            .collect();
        let changed = items.len() != self.shown.drift.len()
            || items.iter().zip(&self.shown.drift).any(|(a, b)| !a.same(b));
        let repair = match verdict {
            DriftVerdict::Clear => None,
            DriftVerdict::Report => self.shown.drift_repair.clone().filter(|_| !changed),
            DriftVerdict::Repair => Some("repairing".to_owned()),
            DriftVerdict::NotRemoved | DriftVerdict::StillNotRemoved => {
                Some("not_removed".to_owned())
            }
        };
        let mut records = Vec::new();
        if changed || matches!(verdict, DriftVerdict::NotRemoved | DriftVerdict::Repair) {
            match verdict {
                DriftVerdict::Clear => log::info!("drift: none any more"),
                DriftVerdict::NotRemoved => log::warn!(
                    "drift: a repair did not remove {} differences; not repaired again",
                    items.len() + found.more
                ),
                _ => log::warn!(
                    "drift: {} differences from the applied spec",
                    items.len() + found.more
                ),
            }
            records.push(RecordBody::Drift(DriftRecord {
                drift: items.clone(),
                more: found.more,
                generation: self.phase.ctx().applied.as_ref().map(|s| s.generation),
                repair: repair.clone(),
            }));
        }
        self.shown.drift = items;
        self.shown.drift_repair = repair;
        let facts = Facts {
            records,
            offered: None,
        };
        let event = Event::Drift { found: fingerprint };
        if let Handled::Refused(why) =
            self.handle(event, Origin::source("drift check"), now, facts)?
        {
            log::debug!("the drift check's result was refused: {why}");
        }
        // The check's count and duration are news even when nothing else changed.
        self.publish();
        Ok(())
    }

    /// Offers `spec` to the phase: admission in the core, then, if accepted, the spec stored
    /// and its `spec_accepted` record first in the input's batch.
    pub(super) fn offer(
        &mut self,
        spec: Arc<ParsedSpec>,
        source: SpecSource,
        request_id: Option<String>,
        if_match: Option<u64>,
        now: Now,
    ) -> Result<Handled, Exit> {
        let offer = SpecOffer {
            hash: spec.hash.clone(),
            if_match,
            request_id: request_id.clone(),
            seq: self.journal.last_seq() + 1,
            embedded: matches!(spec.storage, crate::spec::Storage::Embedded),
        };
        let origin = Origin {
            request_id,
            source: Some(records::source_name(source).into()),
            step: None,
        };
        let facts = Facts {
            records: Vec::new(),
            offered: Some((spec.clone(), source)),
        };
        let handled = self.handle(Event::SpecOffered { offer }, origin, now, facts)?;
        if let Handled::Done(Some(_)) = &handled {
            // Taken (new, identical or repeated): its envelope's settings for compute_ctl
            // itself (Neon's `compute_ctl_config`: the API's keys) take effect.
            self.world.spec_taken(&spec);
        }
        Ok(handled)
    }

    fn record_timing(&mut self, step: StepName, duration_ms: u64, now: Now) {
        let startup = &mut self.shown.startup;
        match step {
            StepName::SyncSafekeepers => startup.sync_safekeepers_ms = duration_ms,
            StepName::FetchBasebackup => startup.basebackup_ms = duration_ms,
            StepName::SpawnPostgres => startup.start_postgres_ms = duration_ms,
            StepName::ApplySpec if self.phase.ctx().applied.is_none() => {
                startup.config_ms = duration_ms;
                if let Some(began) = self.shown.startup_began_ms {
                    startup.total_ms = now.mono_ms.saturating_sub(began);
                }
            }
            _ => {}
        }
    }
}

/// The answer to an offered spec that is not parked.
fn spec_answer(handled: &Result<Handled, Exit>) -> ApiAnswer {
    match handled {
        Ok(Handled::Done(Some(answer))) => ApiAnswer::Spec(*answer),
        Ok(Handled::Done(None)) => ApiAnswer::NotDurable {
            message: "the phase gave no answer to the spec (a defect)".into(),
        },
        Ok(Handled::Refused(why)) => ApiAnswer::Refused(why.clone()),
        Ok(Handled::NotStored(why)) => ApiAnswer::NotDurable {
            message: format!("the spec cannot be stored: {why}"),
        },
        Err(_) => journal_failed(),
    }
}

fn journal_failed() -> ApiAnswer {
    ApiAnswer::NotDurable {
        message: "the journal cannot be written: nothing was accepted".into(),
    }
}

//! The driver's own pure decisions besides the core's: what entering a phase asks of the world
//! (watch activity, tell systemd), and which steps become which effects. Tested as data.

use std::collections::HashMap;
use std::sync::Arc;

use states::{ExitReason, Phase, PhaseName, Step, StepId};

use super::world::{DriftTarget, Effect};
use crate::spec::ParsedSpec;

/// The effects of entering `phase` (the phase changed); `port` is the desired spec's, `drift`
/// the check to run in `running`. systemd hears of it with the view (`Effect::Published`).
pub fn on_entering(phase: &Phase, port: Option<u16>, drift: Option<DriftTarget>) -> Vec<Effect> {
    let watch = match phase.name() {
        PhaseName::Running => Some(Effect::WatchActivity { port, drift }),
        // Leaving `running` for a step: the drift check stops (and a check in flight ends)
        // before the step is handed over.
        PhaseName::ConfigurationPending => Some(Effect::WatchActivity { port, drift: None }),
        // Asking a Postgres that shuts down only fills its log with refusals.
        PhaseName::Terminating | PhaseName::Terminated => Some(Effect::WatchActivity {
            port: None,
            drift: None,
        }),
        PhaseName::Failed if phase.postmaster().is_none() => Some(Effect::WatchActivity {
            port: None,
            drift: None,
        }),
        PhaseName::Empty
        | PhaseName::Init
        | PhaseName::SyncSafekeepers
        | PhaseName::Basebackup
        | PhaseName::Starting
        | PhaseName::Configuring
        | PhaseName::Failed => None,
    };
    watch.into_iter().collect()
}

/// The core's steps as effects, in order, with the spec each worker step needs; and the exit
/// reason, if a step says to leave.
pub fn steps_to_effects(
    steps: Vec<Step>,
    specs: &HashMap<StepId, Arc<ParsedSpec>>,
    phase: PhaseName,
) -> (Vec<Effect>, Option<ExitReason>) {
    let mut effects = Vec::new();
    let mut exit = None;
    for step in steps {
        match step {
            Step::CancelSteps => effects.push(Effect::CancelSteps),
            Step::StartSidecar => effects.push(Effect::StartSidecar),
            Step::StopSidecar => effects.push(Effect::StopSidecar),
            Step::Exit { reason } => exit = Some(reason),
            // Every other step is a worker's; the core's `Step::id` is the one list of them.
            step => {
                let Some(id) = step.id() else {
                    unreachable!("a step done at once reached the worker arm: {step}")
                };
                let spec = specs.get(&id).cloned();
                debug_assert!(
                    step.spec().is_none() || spec.is_some(),
                    "no stored spec for step {step}"
                );
                effects.push(Effect::Submit { step, spec, phase });
            }
        }
    }
    (effects, exit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::{Next, Policy, SpecRef, Transition};

    fn labels(effects: &[Effect]) -> Vec<String> {
        effects.iter().map(Effect::label).collect()
    }

    #[test]
    fn entering_a_phase_starts_or_stops_watching_activity() {
        let boot = Phase::boot(Policy::default(), false, Default::default());
        assert!(on_entering(&boot.phase, Some(5432), None).is_empty());
        let spec = SpecRef {
            generation: 1,
            hash: "sha256:1".into(),
        };
        let Next { phase, .. } = boot
            .phase
            .on_event(states::Event::SpecAccepted { spec }, states::Now::ZERO)
            .unwrap();
        assert!(on_entering(&phase, Some(5432), None).is_empty());
        let terminating = phase
            .on_event(
                states::Event::Terminate {
                    mode: states::ShutdownMode::Fast,
                },
                states::Now::ZERO,
            )
            .unwrap()
            .phase;
        assert_eq!(
            labels(&on_entering(&terminating, Some(5432), None)),
            ["watch_activity none"]
        );
    }

    #[test]
    fn steps_become_effects_and_exit_is_taken_out() {
        let steps = vec![
            Step::CancelSteps,
            Step::StopSidecar,
            Step::FetchSpec { id: StepId(3) },
            Step::Exit {
                reason: ExitReason::StepFailed,
            },
        ];
        let (effects, exit) = steps_to_effects(steps, &HashMap::new(), PhaseName::Empty);
        assert_eq!(
            labels(&effects),
            ["cancel_steps", "stop_sidecar", "submit fetch_spec(#3)"]
        );
        assert_eq!(exit, Some(ExitReason::StepFailed));
    }
}

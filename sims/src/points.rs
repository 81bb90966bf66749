//! The seed's plan for the production code's fault points (F12, [`evsource::faultpoint`]):
//! which points act, how often, and what they do there. Installed on the seed's thread
//! for the whole run; every point reached and every fault fired is counted (coverage).
//!
//! What a point does when it fires:
//! * `group-written` (the log wrote a group, not yet synced) and `checkpoint-saved` (a
//!   node saved its dispatcher checkpoint): the machine crashes there, 0–50 ms later (the
//!   rest of it goes on meanwhile, as during a sync), when the scenario can crash machines
//!   (it takes the crash requests); else a short pause;
//! * `lease-taken` and `outcome-decided`: the node freezes for 5–90 s, longer than its
//!   stations wait, so that a station moves and another node takes its lease meanwhile;
//! * `group-synced`, `catch-up-read`: a pause of up to 0.2 and 2 s, so that other
//!   writers and readers overtake;
//! * `command-decided` (a command loaded its stream and decided; it has not appended):
//!   where the run's store calls are recorded ([`Points::watch_appends`]), the chance
//!   picks *victims* among the commands, once per command id: a victim is held there on
//!   every attempt until another writer's append to the same stream lands (up to 20–60 s;
//!   one victim per stream at a time, the others overtaking it),
//!   so its append conflicts each time the stream has another writer — the adversary
//!   optimistic concurrency must survive, and the one that starves a command on a stream
//!   that telemetry keeps moving (N5). Elsewhere a pause of up to 5 s.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evsource::core::types::StreamId;
use evsource::faultpoint::{self, Action, FaultPoint};
use evsource::oracles::history::History;
use madsim::rand::Rng;
use tokio::sync::mpsc;

/// Which points act in a seed, and with what chance (per mille) each time one is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PointPlan {
    pub fire_per_mille: BTreeMap<FaultPoint, u32>,
}

impl PointPlan {
    /// Each point on with probability one half, at a chance of 1 %, 5 %, 20 % or 100 %
    /// (every time: a moment that is always slow, such as a command whose append always
    /// waits behind a pause); `command-decided`'s victims at 10, 25, 50 or 100 %.
    pub fn draw() -> PointPlan {
        let mut rng = madsim::rand::thread_rng();
        let mut fire_per_mille = BTreeMap::new();
        for point in FaultPoint::ALL {
            if rng.gen_bool(0.5) {
                // `command-decided` picks victims once per command, and a seed has tens
                // of commands, not thousands of reaches: 1 % would pick none.
                let chances = match point {
                    FaultPoint::CommandDecided => [100, 250, 500, 1000],
                    _ => [10, 50, 200, 1000],
                };
                fire_per_mille.insert(point, chances[rng.gen_range(0..4)]);
            }
        }
        PointPlan { fire_per_mille }
    }

    pub fn is_empty(&self) -> bool {
        self.fire_per_mille.is_empty()
    }
}

impl fmt::Display for PointPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fire_per_mille.is_empty() {
            return f.write_str("off");
        }
        let points: Vec<String> = self
            .fire_per_mille
            .iter()
            .map(|(point, per_mille)| format!("{point} {}%", per_mille / 10))
            .collect();
        f.write_str(&points.join(", "))
    }
}

/// A request to crash the machine a point fired on.
pub type CrashRequest = (madsim::task::NodeId, FaultPoint);

/// A victim held on its stream; the stream is free again when this drops (also when the
/// machine holding it crashes mid-wait).
struct Held {
    streams: Arc<Mutex<HeldStreams>>,
    stream: StreamId,
}

impl Held {
    fn take(streams: &Arc<Mutex<HeldStreams>>, stream: &StreamId, command: &str) -> Option<Held> {
        let mut held = streams.lock().unwrap_or_else(|p| p.into_inner());
        let (victim, runs) = held
            .entry(stream.clone())
            .or_insert_with(|| (command.to_owned(), 0));
        if victim != command {
            return None;
        }
        *runs += 1;
        Some(Held {
            streams: streams.clone(),
            stream: stream.clone(),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, runs)) = held.get_mut(&self.stream) {
            *runs -= 1;
            if *runs == 0 {
                held.remove(&self.stream);
            }
        }
    }
}

/// How often each point was reached and fired in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PointCounts {
    pub reached: BTreeMap<FaultPoint, u64>,
    pub fired: BTreeMap<FaultPoint, u64>,
}

struct State {
    plan: PointPlan,
    counts: PointCounts,
    armed: bool,
    crashes: Option<mpsc::UnboundedSender<CrashRequest>>,
    /// The run's store calls, when recorded: `command-decided` waits on them.
    appends: Option<History>,
    /// Whether each command id reached at `command-decided` is a victim, decided when
    /// it is first reached (ids are unique per command; retries reuse them).
    victims: BTreeMap<String, bool>,
    /// Streams a victim is held on now: one victim per stream waits at a time, and the
    /// others overtake it (two held victims would only wait each other out). The same
    /// command run again elsewhere (a client's retry through another node) is held too.
    held: Arc<Mutex<HeldStreams>>,
}

/// Per stream: the victim command held there and how many of its runs are.
type HeldStreams = BTreeMap<StreamId, (String, usize)>;

/// The installed plan of one run. Dropping it uninstalls the hook.
pub struct Points {
    state: Rc<RefCell<State>>,
    _installed: faultpoint::Installed,
}

impl Points {
    /// Installs `plan` on this thread. Crash requests go to the returned receiver; a
    /// scenario that cannot crash machines drops it, and those points pause instead.
    pub fn install(plan: PointPlan) -> (Points, mpsc::UnboundedReceiver<CrashRequest>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let state = Rc::new(RefCell::new(State {
            plan,
            counts: PointCounts::default(),
            armed: true,
            crashes: Some(sender),
            appends: None,
            victims: BTreeMap::new(),
            held: Arc::default(),
        }));
        let hooked = state.clone();
        let installed = faultpoint::install(Rc::new(move |point, subject: &str| {
            act(&mut hooked.borrow_mut(), point, subject)
        }));
        (
            Points {
                state,
                _installed: installed,
            },
            receiver,
        )
    }

    /// From now on `command-decided` waits for another writer of the command's stream,
    /// as `history` sees the appends.
    pub fn watch_appends(&self, history: History) {
        self.state.borrow_mut().appends = Some(history);
    }

    /// Faults stop here (the fault phase is over); points are still counted.
    pub fn disarm(&self) {
        let mut state = self.state.borrow_mut();
        state.armed = false;
        state.crashes = None;
    }

    pub fn counts(&self) -> PointCounts {
        self.state.borrow().counts.clone()
    }
}

/// The hook: counts the point and, if the plan says so this time, acts.
fn act(state: &mut State, point: FaultPoint, subject: &str) -> Option<Action> {
    *state.counts.reached.entry(point).or_default() += 1;
    let per_mille = *state.plan.fire_per_mille.get(&point)?;
    if !state.armed {
        return None;
    }
    let mut rng = madsim::rand::thread_rng();
    if point == FaultPoint::CommandDecided
        && let Some(history) = &state.appends
        && let Some((stream, command)) = subject.split_once(' ')
        && let Ok(stream) = StreamId::new(stream)
    {
        let victim = *state
            .victims
            .entry(command.to_owned())
            .or_insert_with(|| rng.gen_range(0..1000) < per_mille);
        if !victim {
            return None;
        }
        // Another victim is held on this stream: this one overtakes it.
        let held = Held::take(&state.held, &stream, command)?;
        *state.counts.fired.entry(point).or_default() += 1;
        let (history, patience) = (history.clone(), rng.gen_range(20_000..60_000));
        return Some(Box::pin(async move {
            history
                .overtaken(&held.stream, Duration::from_millis(patience))
                .await;
        }));
    }
    if rng.gen_range(0..1000) >= per_mille {
        return None;
    }
    *state.counts.fired.entry(point).or_default() += 1;
    let pause = |millis: std::ops::Range<u64>, rng: &mut madsim::rand::GlobalRng| -> Action {
        let wait = Duration::from_millis(rng.gen_range(millis));
        Box::pin(tokio::time::sleep(wait))
    };
    match point {
        FaultPoint::GroupWritten | FaultPoint::CheckpointSaved => {
            let here = madsim::plugin::node();
            match &state.crashes {
                Some(crashes) if !crashes.is_closed() => {
                    // The crash lands a moment later, as one inside a sync would: what
                    // the machine serves meanwhile (reads of the group not yet durable,
                    // say) is what the crash can then take away.
                    let crashes = crashes.clone();
                    let lands_after = Duration::from_millis(rng.gen_range(0..50));
                    Some(Box::pin(async move {
                        tokio::time::sleep(lands_after).await;
                        if crashes.send((here, point)).is_ok() {
                            tracing::info!(%point, "fault point: the machine crashes here");
                            // Frozen until the crash takes the machine down.
                            std::future::pending::<()>().await;
                        }
                    }))
                }
                _ => Some(pause(0..100, &mut rng)),
            }
        }
        FaultPoint::LeaseTaken | FaultPoint::OutcomeDecided => {
            tracing::info!(%point, "fault point: the node freezes here");
            Some(pause(5_000..90_000, &mut rng))
        }
        FaultPoint::GroupSynced => Some(pause(0..200, &mut rng)),
        FaultPoint::CatchUpRead => Some(pause(0..2_000, &mut rng)),
        FaultPoint::CommandDecided => Some(pause(0..5_000, &mut rng)),
    }
}

//! **I11**, the store's history: every store operation as its callers saw it — the call,
//! and its answer or none at all (the caller crashed, or gave up) — checked against the
//! store contract after quiescence.
//!
//! [`RecordingStore`] wraps any [`EventStore`] and writes each call into a shared
//! [`History`]: when it was invoked and when it returned, as steps of one sequence (the
//! simulator runs on one thread, so the sequence *is* real-time order; virtual times are
//! kept for reading). [`check_history`] then judges the history against the store's
//! final contents, read after every fault has healed.
//!
//! # Why not a search
//!
//! Porcupine and Knossos search for a linearization order, which is exponential in the
//! worst case. This store makes its order observable: every committed event carries a
//! gapless global position in commit order. So the checker does not search for the
//! order of writes — it is given — it verifies it, in O(n log n):
//!
//! * **the order agrees with real time**: an event certainly committed (acknowledged)
//!   before another event's first append was even invoked has the smaller position;
//! * **every acknowledged append is stored** where its answer said, with exactly its
//!   bytes (I2), and it met its expectation and its cross-stream condition there;
//! * **every refusal was true at some moment of its call**: a wrong expected version
//!   names a version the stream had while the call was open, a failed condition names a
//!   matching event that could have been there; a definite refusal stored nothing;
//! * **every read returned exactly the stored bytes**, contiguous, none of it later gone
//!   (no dirty reads across a crash), and nothing older than what was already
//!   acknowledged when the read began (no stale reads).
//!
//! Calls whose answer never came (or said "outcome unknown") constrain nothing but may
//! explain an event. Streams are independent in every per-stream check, so the cost is
//! one map lookup per event of every answer: bounded, and reported ([`HistoryStats`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::Violation;
use crate::core::types::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, EventView, ExpectedVersion,
    GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use crate::store::{AppendError, EventStore, ReadError, SnapshotError};

/// Operations one history keeps at most; past it, calls go unrecorded and the check
/// says so (a bounded recorder under a runaway workload).
pub const HISTORY_OPERATIONS_MAX: usize = 1_000_000;

/// How often [`History::overtaken`] looks whether a stream moved.
const OVERTAKEN_POLL: Duration = Duration::from_millis(5);

/// A call to the store, as the caller made it.
#[derive(Clone, Debug)]
pub enum Call {
    Append {
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    },
    ReadStream {
        stream: StreamId,
        from: StreamVersion,
        max: usize,
    },
    ReadAll {
        from: GlobalPosition,
        max: usize,
    },
    ReadMatching {
        query: Query,
        after: Option<GlobalPosition>,
    },
    FindEvent {
        id: EventId,
    },
    CurrentVersion {
        stream: StreamId,
    },
    EventCount,
    SaveSnapshot {
        stream: StreamId,
        snapshot: Snapshot,
    },
    LoadSnapshot {
        stream: StreamId,
    },
}

/// What the store answered.
#[derive(Clone, Debug)]
pub enum Answer {
    Appended(Result<AppendResult, AppendError>),
    Events(Result<Vec<RecordedEvent>, ReadError>),
    Found(Result<Option<RecordedEvent>, ReadError>),
    Version(Result<CurrentVersion, ReadError>),
    Count(Result<u64, ReadError>),
    Saved(Result<(), SnapshotError>),
    Loaded(Result<Option<Snapshot>, ReadError>),
}

/// One call and, if it came, its answer. `invoked` and `returned` are steps of the
/// history's one sequence: `a.returned < b.invoked` means a ended before b began.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: Arc<str>,
    pub call: Call,
    pub invoked: u64,
    pub invoked_at: Duration,
    pub returned: Option<(u64, Duration, Answer)>,
}

#[derive(Debug, Default)]
struct Recorded {
    operations: Vec<Operation>,
    next_step: u64,
    unrecorded: u64,
    /// Appends that wrote, per stream: what [`History::overtaken`] waits on.
    written: BTreeMap<StreamId, u64>,
}

/// The operations of one run, shared by every [`RecordingStore`] of the run.
#[derive(Clone, Debug)]
pub struct History {
    recorded: Arc<Mutex<Recorded>>,
    started: tokio::time::Instant,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            recorded: Arc::default(),
            started: tokio::time::Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn invoke(&self, client: &Arc<str>, call: Call) -> Option<usize> {
        let at = self.started.elapsed();
        let mut recorded = self.lock();
        if recorded.operations.len() >= HISTORY_OPERATIONS_MAX {
            recorded.unrecorded += 1;
            return None;
        }
        let step = recorded.next_step;
        recorded.next_step += 1;
        recorded.operations.push(Operation {
            client: client.clone(),
            call,
            invoked: step,
            invoked_at: at,
            returned: None,
        });
        Some(recorded.operations.len() - 1)
    }

    fn complete(&self, index: Option<usize>, answer: Answer) {
        let Some(index) = index else { return };
        let at = self.started.elapsed();
        let mut recorded = self.lock();
        let step = recorded.next_step;
        recorded.next_step += 1;
        recorded.operations[index].returned = Some((step, at, answer));
    }

    /// Appends to `stream` that wrote, so far, by any client of this history.
    pub fn written_to(&self, stream: &StreamId) -> u64 {
        self.lock().written.get(stream).copied().unwrap_or(0)
    }

    /// Waits until some client's append to `stream` writes, or `patience` passes: the
    /// simulator's pause at a command's decided-not-appended moment (F12), which makes
    /// the optimistic-concurrency race a writer loses common instead of rare.
    pub async fn overtaken(&self, stream: &StreamId, patience: Duration) {
        let before = self.written_to(stream);
        let deadline = tokio::time::Instant::now() + patience;
        while self.written_to(stream) == before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(OVERTAKEN_POLL).await;
        }
    }

    /// Every operation so far, in invocation order.
    pub fn operations(&self) -> Vec<Operation> {
        self.lock().operations.clone()
    }

    /// Calls made after the history was full, and so never checked.
    pub fn unrecorded(&self) -> u64 {
        self.lock().unrecorded
    }
}

/// An [`EventStore`] that records every call it passes on into a [`History`].
#[derive(Clone, Debug)]
pub struct RecordingStore<S> {
    inner: S,
    history: History,
    client: Arc<str>,
}

impl<S: EventStore> RecordingStore<S> {
    /// `client` names the caller in violations (a node, a writer).
    pub fn new(inner: S, history: History, client: &str) -> RecordingStore<S> {
        RecordingStore {
            inner,
            history,
            client: client.into(),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: EventStore> EventStore for RecordingStore<S> {
    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        let call = Call::Append {
            stream: stream.clone(),
            expected,
            events: events.clone(),
            condition: condition.cloned(),
        };
        let index = self.history.invoke(&self.client, call);
        let result = self
            .inner
            .append_if(stream, expected, events, condition)
            .await;
        if matches!(&result, Ok(appended) if appended.written) {
            *self
                .history
                .lock()
                .written
                .entry(stream.clone())
                .or_default() += 1;
        }
        self.history
            .complete(index, Answer::Appended(result.clone()));
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let call = Call::ReadStream {
            stream: stream.clone(),
            from,
            max,
        };
        let index = self.history.invoke(&self.client, call);
        let result = self.inner.read_stream(stream, from, max).await;
        self.history.complete(index, Answer::Events(result.clone()));
        result
    }

    async fn visit_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        visit: F,
    ) -> Result<u64, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()> + Send,
    {
        // Through recorded pages, so that replays are checked like any read.
        crate::store::visit_pages(self, stream, from, 1024, false, visit).await
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let index = self
            .history
            .invoke(&self.client, Call::ReadAll { from, max });
        let result = self.inner.read_all(from, max).await;
        self.history.complete(index, Answer::Events(result.clone()));
        result
    }

    async fn read_matching(
        &self,
        query: &Query,
        after: Option<GlobalPosition>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let call = Call::ReadMatching {
            query: query.clone(),
            after,
        };
        let index = self.history.invoke(&self.client, call);
        let result = self.inner.read_matching(query, after, max).await;
        self.history.complete(index, Answer::Events(result.clone()));
        result
    }

    async fn find_event(&self, id: EventId) -> Result<Option<RecordedEvent>, ReadError> {
        let index = self.history.invoke(&self.client, Call::FindEvent { id });
        let result = self.inner.find_event(id).await;
        self.history.complete(index, Answer::Found(result.clone()));
        result
    }

    async fn current_version(&self, stream: &StreamId) -> Result<CurrentVersion, ReadError> {
        let call = Call::CurrentVersion {
            stream: stream.clone(),
        };
        let index = self.history.invoke(&self.client, call);
        let result = self.inner.current_version(stream).await;
        self.history
            .complete(index, Answer::Version(result.clone()));
        result
    }

    async fn event_count(&self) -> Result<u64, ReadError> {
        let index = self.history.invoke(&self.client, Call::EventCount);
        let result = self.inner.event_count().await;
        self.history.complete(index, Answer::Count(result.clone()));
        result
    }

    async fn wait_for_event_count_above(&self, count: u64) -> Result<(), ReadError> {
        self.inner.wait_for_event_count_above(count).await
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<(), SnapshotError> {
        let call = Call::SaveSnapshot {
            stream: stream.clone(),
            snapshot: snapshot.clone(),
        };
        let index = self.history.invoke(&self.client, call);
        let result = self.inner.save_snapshot(stream, snapshot).await;
        self.history.complete(index, Answer::Saved(result.clone()));
        result
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, ReadError> {
        let call = Call::LoadSnapshot {
            stream: stream.clone(),
        };
        let index = self.history.invoke(&self.client, call);
        let result = self.inner.load_snapshot(stream).await;
        self.history.complete(index, Answer::Loaded(result.clone()));
        result
    }
}

/// What a check covered and what it cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    pub operations: u64,
    /// Appends acknowledged with a position.
    pub appends_acknowledged: u64,
    /// Appends refused with a definite error.
    pub appends_refused: u64,
    /// Calls whose answer never came or said the outcome is unknown.
    pub outcomes_unknown: u64,
    /// Appends answered "outcome unknown" whose events the final store holds: an unknown
    /// settled (by the caller's retry or by the write having landed).
    pub unknowns_settled: u64,
    /// Reads (of any kind) whose every event was compared with the final store.
    pub reads_checked: u64,
    /// Events compared byte for byte.
    pub events_compared: u64,
    /// Distinct streams the history touched.
    pub streams: u64,
    /// Calls made after the history was full (unchecked).
    pub unrecorded: u64,
    /// Wall time the check took (set by callers that time it).
    pub checked_in: Duration,
}

impl HistoryStats {
    pub fn add(&mut self, other: &HistoryStats) {
        self.operations += other.operations;
        self.appends_acknowledged += other.appends_acknowledged;
        self.appends_refused += other.appends_refused;
        self.outcomes_unknown += other.outcomes_unknown;
        self.unknowns_settled += other.unknowns_settled;
        self.reads_checked += other.reads_checked;
        self.events_compared += other.events_compared;
        self.streams += other.streams;
        self.unrecorded += other.unrecorded;
        self.checked_in += other.checked_in;
    }
}

/// When an event can have been committed, from the calls that carried its id and may have
/// written it: not before the first of them was invoked, and certainly by the first
/// acknowledgement. (`u64::MAX` when every call carrying it was refused.)
#[derive(Clone, Copy, Debug)]
struct Window {
    first_invoked: u64,
    first_acknowledged: Option<u64>,
    /// Who acknowledged it first, and when (virtual time): for the report.
    acknowledged_by: Option<(usize, Duration)>,
    /// Some call carrying it had an answer other than a definite refusal.
    possibly_written: bool,
}

/// The final store: every event by position, by stream and version, and by id.
struct Final<'a> {
    events: &'a [RecordedEvent],
    by_place: HashMap<(&'a str, u64), usize>,
    by_id: HashMap<EventId, usize>,
    /// Per stream, the number of events (its next version).
    lengths: HashMap<&'a str, u64>,
}

impl<'a> Final<'a> {
    fn new(events: &'a [RecordedEvent]) -> Final<'a> {
        let mut by_place = HashMap::with_capacity(events.len());
        let mut by_id = HashMap::with_capacity(events.len());
        let mut lengths: HashMap<&str, u64> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            by_place.insert((event.stream.as_str(), event.version.0), index);
            by_id.insert(event.id, index);
            let length = lengths.entry(event.stream.as_str()).or_default();
            *length = (*length).max(event.version.0 + 1);
        }
        Final {
            events,
            by_place,
            by_id,
            lengths,
        }
    }

    fn at_position(&self, position: GlobalPosition) -> Option<&'a RecordedEvent> {
        self.events
            .get(position.0 as usize)
            .filter(|e| e.position == position)
    }

    fn at(&self, stream: &str, version: u64) -> Option<&'a RecordedEvent> {
        self.by_place
            .get(&(stream, version))
            .map(|&i| &self.events[i])
    }

    fn length(&self, stream: &str) -> u64 {
        self.lengths.get(stream).copied().unwrap_or(0)
    }
}

fn same_content(data: &EventData, stored: &RecordedEvent) -> bool {
    data.id == stored.id
        && data.event_type == stored.event_type
        && data.tags == stored.tags
        && data.metadata == stored.metadata
        && data.payload == stored.payload
}

fn same_event(seen: &RecordedEvent, stored: &RecordedEvent) -> bool {
    seen == stored
}

fn violation(detail: String) -> Violation {
    Violation {
        invariant: "I11",
        detail,
    }
}

fn describe(operation: &Operation) -> String {
    let call = match &operation.call {
        Call::Append {
            stream,
            expected,
            events,
            condition,
        } => format!(
            "append of {} event(s) to {stream} expecting {expected}{}",
            events.len(),
            if condition.is_some() {
                " with a condition"
            } else {
                ""
            }
        ),
        Call::ReadStream { stream, from, max } => {
            format!("read of {stream} from version {from} (max {max})")
        }
        Call::ReadAll { from, max } => format!("read of all from position {from} (max {max})"),
        Call::ReadMatching { after, .. } => format!("query read after {after:?}"),
        Call::FindEvent { id } => format!("find of event {id}"),
        Call::CurrentVersion { stream } => format!("version of {stream}"),
        Call::EventCount => "event count".to_owned(),
        Call::SaveSnapshot { stream, snapshot } => {
            format!("snapshot save of {stream} at {}", snapshot.version)
        }
        Call::LoadSnapshot { stream } => format!("snapshot load of {stream}"),
    };
    let returned = match &operation.returned {
        Some((_, at, _)) => format!("returned at {:.3} s", at.as_secs_f64()),
        None => "never returned".to_owned(),
    };
    format!(
        "{}'s {call} (invoked at {:.3} s, {returned})",
        operation.client,
        operation.invoked_at.as_secs_f64()
    )
}

/// What [`check_history`] may assume of the run.
#[derive(Clone, Copy, Debug)]
pub struct HistoryCheck {
    /// Every append of the run went through a [`RecordingStore`], so an event no recorded
    /// call could have written is a phantom.
    pub all_writers_recorded: bool,
    /// The backend's cap on events per read: a page shorter than both this and the
    /// caller's `max` claims the end of the stream (or of the log).
    pub read_events_max: usize,
}

/// Checks `operations` against `stored`, everything the store holds after quiescence
/// (read from position 0; it must itself pass I3).
pub fn check_history(
    operations: &[Operation],
    stored: &[RecordedEvent],
    check: HistoryCheck,
) -> Result<HistoryStats, Violation> {
    let all_writers_recorded = check.all_writers_recorded;
    let stored_index = Final::new(stored);
    let mut stats = HistoryStats {
        operations: operations.len() as u64,
        ..HistoryStats::default()
    };
    let windows = windows(operations);
    let mut streams: BTreeMap<&str, ()> = BTreeMap::new();

    for event in stored {
        match windows.get(&event.id) {
            Some(window) if !window.possibly_written => {
                let refused = operations.iter().find(|op| carries(op, event.id));
                return Err(violation(format!(
                    "event {} at {} in {} is stored, but every append that carried it was refused: {}",
                    event.id,
                    event.position,
                    event.stream,
                    refused.map(describe).unwrap_or_default()
                )));
            }
            None if all_writers_recorded => {
                return Err(violation(format!(
                    "event {} at {} in {} is stored, but no recorded append carried it (a phantom write)",
                    event.id, event.position, event.stream
                )));
            }
            _ => {}
        }
    }
    // The commit order agrees with real time: no event certainly committed before
    // another's first call was invoked sits at a later position.
    check_real_time_order(stored, &windows)?;

    for operation in operations {
        if let Some(stream) = stream_of(&operation.call) {
            streams.insert(stream.as_str(), ());
        }
        let Some((returned, _, answer)) = &operation.returned else {
            stats.outcomes_unknown += 1;
            continue;
        };
        let context = Context {
            operation,
            operations,
            returned: *returned,
            page_cap: check.read_events_max,
            stored: &stored_index,
            windows: &windows,
        };
        match (&operation.call, answer) {
            (
                Call::Append {
                    stream,
                    expected,
                    events,
                    condition,
                },
                Answer::Appended(result),
            ) => match result {
                Ok(appended) => {
                    stats.appends_acknowledged += 1;
                    stats.events_compared += events.len() as u64;
                    context.acknowledged(
                        stream,
                        *expected,
                        events,
                        condition.as_ref(),
                        appended,
                    )?;
                }
                Err(AppendError::OutcomeUnknown(_)) => {
                    stats.outcomes_unknown += 1;
                    if events
                        .iter()
                        .all(|e| stored_index.by_id.contains_key(&e.id))
                    {
                        stats.unknowns_settled += 1;
                    }
                }
                Err(error) => {
                    stats.appends_refused += 1;
                    context.refused(stream, *expected, condition.as_ref(), error)?;
                }
            },
            (Call::ReadStream { stream, from, max }, Answer::Events(result)) => {
                if let Ok(events) = result {
                    stats.reads_checked += 1;
                    stats.events_compared += events.len() as u64;
                    context.stream_read(stream, *from, *max, events)?;
                } else if let Err(ReadError::StreamNotFound(_)) = result {
                    stats.reads_checked += 1;
                    context.not_after(stream, 0, "said the stream does not exist")?;
                }
            }
            (Call::ReadAll { from, max }, Answer::Events(Ok(events))) => {
                stats.reads_checked += 1;
                stats.events_compared += events.len() as u64;
                context.all_read(*from, *max, events)?;
            }
            (Call::ReadMatching { query, after }, Answer::Events(Ok(events))) => {
                stats.reads_checked += 1;
                stats.events_compared += events.len() as u64;
                for event in events {
                    if !query.matches(&event.event_type, &event.tags)
                        || after.is_some_and(|after| event.position <= after)
                    {
                        return Err(violation(format!(
                            "{} returned event {} at {}, which the query does not select",
                            describe(operation),
                            event.id,
                            event.position
                        )));
                    }
                    context.seen(event)?;
                }
            }
            (Call::FindEvent { id }, Answer::Found(Ok(found))) => {
                stats.reads_checked += 1;
                match found {
                    Some(event) => {
                        stats.events_compared += 1;
                        if event.id != *id {
                            return Err(violation(format!(
                                "{} returned event {}",
                                describe(operation),
                                event.id
                            )));
                        }
                        context.seen(event)?;
                    }
                    None => context.absent(*id)?,
                }
            }
            (Call::CurrentVersion { stream }, Answer::Version(Ok(version))) => {
                stats.reads_checked += 1;
                let length = match version {
                    CurrentVersion::NoStream => 0,
                    CurrentVersion::Current(v) => v.0 + 1,
                };
                context.stream_length(stream, length)?;
            }
            (Call::EventCount, Answer::Count(Ok(count))) => {
                stats.reads_checked += 1;
                context.count(*count)?;
            }
            (Call::LoadSnapshot { stream }, Answer::Loaded(Ok(Some(snapshot)))) => {
                stats.reads_checked += 1;
                context.snapshot(stream, snapshot, operations)?;
            }
            _ => {}
        }
    }
    stats.streams = streams.len() as u64;
    Ok(stats)
}

fn stream_of(call: &Call) -> Option<&StreamId> {
    match call {
        Call::Append { stream, .. }
        | Call::ReadStream { stream, .. }
        | Call::CurrentVersion { stream }
        | Call::SaveSnapshot { stream, .. }
        | Call::LoadSnapshot { stream } => Some(stream),
        _ => None,
    }
}

fn carries(operation: &Operation, id: EventId) -> bool {
    matches!(&operation.call, Call::Append { events, .. } if events.iter().any(|e| e.id == id))
}

/// Each event id's commit window, from every append that carried it.
fn windows(operations: &[Operation]) -> HashMap<EventId, Window> {
    let mut windows: HashMap<EventId, Window> = HashMap::new();
    for (index, operation) in operations.iter().enumerate() {
        let Call::Append { events, .. } = &operation.call else {
            continue;
        };
        let (acknowledged, possibly_written) = match &operation.returned {
            Some((step, at, Answer::Appended(Ok(_)))) => (Some((*step, *at)), true),
            Some((_, _, Answer::Appended(Err(AppendError::OutcomeUnknown(_))))) | None => {
                (None, true)
            }
            Some(_) => (None, false),
        };
        for event in events {
            let window = windows.entry(event.id).or_insert(Window {
                first_invoked: u64::MAX,
                first_acknowledged: None,
                acknowledged_by: None,
                possibly_written: false,
            });
            // A call refused definitely wrote nothing: it is no moment the event could
            // have been committed at (or a refusal could be explained by itself).
            if possibly_written {
                window.first_invoked = window.first_invoked.min(operation.invoked);
            }
            if let Some((step, at)) = acknowledged
                && window.first_acknowledged.is_none_or(|first| step < first)
            {
                window.first_acknowledged = Some(step);
                window.acknowledged_by = Some((index, at));
            }
            window.possibly_written |= possibly_written;
        }
    }
    windows
}

fn check_real_time_order(
    stored: &[RecordedEvent],
    windows: &HashMap<EventId, Window>,
) -> Result<(), Violation> {
    // Walk from the last position back, keeping the earliest certain commit seen later.
    let mut earliest_later: Option<(u64, &RecordedEvent)> = None;
    for event in stored.iter().rev() {
        let Some(window) = windows.get(&event.id) else {
            continue;
        };
        if let Some((acknowledged, later)) = earliest_later
            && acknowledged < window.first_invoked
        {
            return Err(violation(format!(
                "event {} was acknowledged before event {} was first appended, yet it sits at the later position ({} > {}): the commit order contradicts real time",
                later.id, event.id, later.position, event.position
            )));
        }
        if let Some(acknowledged) = window.first_acknowledged
            && earliest_later.is_none_or(|(earliest, _)| acknowledged < earliest)
        {
            earliest_later = Some((acknowledged, event));
        }
    }
    Ok(())
}

/// One answered operation being checked.
struct Context<'a> {
    operation: &'a Operation,
    operations: &'a [Operation],
    returned: u64,
    page_cap: usize,
    stored: &'a Final<'a>,
    windows: &'a HashMap<EventId, Window>,
}

impl Context<'_> {
    fn fail(&self, what: String) -> Violation {
        violation(format!("{}: {what}", describe(self.operation)))
    }

    /// The event could have been committed before this call returned.
    fn could_precede(&self, event: &RecordedEvent) -> bool {
        self.windows
            .get(&event.id)
            .is_none_or(|w| w.first_invoked < self.returned)
    }

    /// The event was certainly committed before this call was invoked.
    fn certainly_before(&self, event: &RecordedEvent) -> bool {
        self.windows
            .get(&event.id)
            .and_then(|w| w.first_acknowledged)
            .is_some_and(|acknowledged| acknowledged < self.operation.invoked)
    }

    /// An event a reader was given is stored, there, with the same bytes, and could
    /// already have been committed.
    fn seen(&self, event: &RecordedEvent) -> Result<(), Violation> {
        match self.stored.at_position(event.position) {
            Some(stored) if same_event(event, stored) => {}
            Some(stored) => {
                return Err(self.fail(format!(
                    "it was given event {} ({} v{}, {} payload bytes) at {}, where the store holds event {} ({} v{}, {} payload bytes){}",
                    event.id,
                    event.stream,
                    event.version,
                    event.payload.len(),
                    event.position,
                    stored.id,
                    stored.stream,
                    stored.version,
                    stored.payload.len(),
                    if stored.id == event.id {
                        ": same id, other content"
                    } else {
                        ""
                    }
                )));
            }
            None => {
                return Err(self.fail(format!(
                    "it was given event {} at {} in {}, which the store no longer holds (a dirty read: seen before a crash, gone after)",
                    event.id, event.position, event.stream
                )));
            }
        }
        if !self.could_precede(event) {
            return Err(self.fail(format!(
                "it was given event {} before any append of it was invoked",
                event.id
            )));
        }
        Ok(())
    }

    /// No event at `(stream, version)` was certainly committed before this call began.
    fn not_after(&self, stream: &StreamId, version: u64, claim: &str) -> Result<(), Violation> {
        if let Some(next) = self.stored.at(stream.as_str(), version)
            && self.certainly_before(next)
        {
            return Err(self.fail(format!(
                "it {claim}, but event {} (v{version}, at {}) had been acknowledged before the call{} (a stale answer)",
                next.id,
                next.position,
                self.acknowledgement(next)
            )));
        }
        Ok(())
    }

    /// ", to <client> at <time>": who was first told `event` was stored.
    fn acknowledgement(&self, event: &RecordedEvent) -> String {
        self.windows
            .get(&event.id)
            .and_then(|w| w.acknowledged_by)
            .map(|(index, at)| {
                format!(
                    ", by {}",
                    describe(&self.operations[index]).replace(
                        &format!("returned at {:.3} s", at.as_secs_f64()),
                        &format!("acknowledged at {:.3} s", at.as_secs_f64())
                    )
                )
            })
            .unwrap_or_default()
    }

    fn stream_length(&self, stream: &StreamId, length: u64) -> Result<(), Violation> {
        if length > 0 {
            match self.stored.at(stream.as_str(), length - 1) {
                Some(last) if self.could_precede(last) => {}
                _ => {
                    return Err(self.fail(format!(
                        "it said the stream holds {length} event(s); the store holds {}",
                        self.stored.length(stream.as_str())
                    )));
                }
            }
        }
        self.not_after(stream, length, &format!("said the stream holds {length}"))
    }

    fn acknowledged(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[EventData],
        condition: Option<&AppendCondition>,
        appended: &AppendResult,
    ) -> Result<(), Violation> {
        if events.is_empty() {
            return Ok(());
        }
        let count = events.len() as u64;
        if appended.last_version.0 + 1 != appended.first_version.0 + count {
            return Err(self.fail(format!(
                "acknowledged versions {}..={} for {count} event(s)",
                appended.first_version, appended.last_version
            )));
        }
        let met = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => appended.first_version.0 == 0,
            ExpectedVersion::StreamExists => appended.first_version.0 > 0,
            ExpectedVersion::Exact(version) => appended.first_version.0 == version.0 + 1,
        };
        if !met && appended.written {
            return Err(self.fail(format!(
                "acknowledged at version {}, which the expectation excludes",
                appended.first_version
            )));
        }
        for (offset, data) in events.iter().enumerate() {
            let version = appended.first_version.0 + offset as u64;
            let position = GlobalPosition(appended.first_position.0 + offset as u64);
            match self.stored.at(stream.as_str(), version) {
                // An idempotent retry (nothing written) is recognised by its ids alone
                // (the contract): a resend may carry other metadata, e.g. its own time.
                Some(stored)
                    if stored.position == position
                        && (same_content(data, stored)
                            || (!appended.written && data.id == stored.id)) => {}
                Some(stored) => {
                    return Err(self.fail(format!(
                        "acknowledged event {} at v{version}, position {position}; the store holds event {} there (position {}){}",
                        data.id,
                        stored.id,
                        stored.position,
                        if stored.id == data.id {
                            ", with other content"
                        } else {
                            ""
                        }
                    )));
                }
                None => {
                    return Err(Violation {
                        invariant: "I2",
                        detail: format!(
                            "{}: acknowledged event {} at v{version}, position {position}, is not in the store after recovery (a lost acknowledged write)",
                            describe(self.operation),
                            data.id
                        ),
                    });
                }
            }
        }
        if let Some(condition) = condition.filter(|_| appended.written) {
            let from = condition.after.map_or(0, |after| after.0 + 1);
            for position in from..appended.first_position.0 {
                let Some(earlier) = self.stored.at_position(GlobalPosition(position)) else {
                    continue;
                };
                if condition.query.matches(&earlier.event_type, &earlier.tags) {
                    return Err(self.fail(format!(
                        "acknowledged at {} although event {} at {position} matches its condition (after {:?})",
                        appended.first_position, earlier.id, condition.after
                    )));
                }
            }
        }
        Ok(())
    }

    fn refused(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        condition: Option<&AppendCondition>,
        error: &AppendError,
    ) -> Result<(), Violation> {
        match error {
            AppendError::WrongExpectedVersion { actual, .. } => {
                let admits = match (expected, *actual) {
                    (ExpectedVersion::Any, _) => true,
                    (ExpectedVersion::NoStream, CurrentVersion::NoStream) => true,
                    (ExpectedVersion::StreamExists, CurrentVersion::Current(_)) => true,
                    (ExpectedVersion::Exact(want), CurrentVersion::Current(have)) => want == have,
                    _ => false,
                };
                if admits {
                    return Err(self.fail(format!(
                        "refused as a wrong expected version although the actual {actual} meets it"
                    )));
                }
                let length = match actual {
                    CurrentVersion::NoStream => 0,
                    CurrentVersion::Current(v) => v.0 + 1,
                };
                self.stream_length(stream, length)
            }
            AppendError::ConditionFailed { position } => {
                let Some(condition) = condition else {
                    return Err(self.fail("refused for a condition it did not carry".into()));
                };
                match self.stored.at_position(*position) {
                    Some(event)
                        if condition.query.matches(&event.event_type, &event.tags)
                            && condition.after.is_none_or(|after| event.position > after)
                            && self.could_precede(event) =>
                    {
                        Ok(())
                    }
                    _ => Err(self.fail(format!(
                        "refused for a matching event at {position}, which the store does not hold there"
                    ))),
                }
            }
            AppendError::DuplicateEventId { event_id, existing } => {
                match self.stored.by_id.get(event_id).map(|&i| &self.stored.events[i]) {
                    Some(event)
                        if existing.is_none_or(|p| p == event.position)
                            && self.could_precede(event) =>
                    {
                        Ok(())
                    }
                    _ => Err(self.fail(format!(
                        "refused as a duplicate of event {event_id} (at {existing:?}), which the store does not hold"
                    ))),
                }
            }
            _ => Ok(()),
        }
    }

    fn stream_read(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
        events: &[RecordedEvent],
    ) -> Result<(), Violation> {
        for (offset, event) in events.iter().enumerate() {
            let version = from.0 + offset as u64;
            if event.stream != *stream || event.version.0 != version {
                return Err(self.fail(format!(
                    "its answer #{offset} is {} v{}, not {stream} v{version}",
                    event.stream, event.version
                )));
            }
            self.seen(event)?;
        }
        if events.len() < max.min(self.page_cap) {
            let next = from.0 + events.len() as u64;
            self.not_after(stream, next, &format!("ended the stream before v{next}"))?;
        }
        Ok(())
    }

    fn all_read(
        &self,
        from: GlobalPosition,
        max: usize,
        events: &[RecordedEvent],
    ) -> Result<(), Violation> {
        for (offset, event) in events.iter().enumerate() {
            let position = from.0 + offset as u64;
            if event.position.0 != position {
                return Err(self.fail(format!(
                    "its answer #{offset} is at {}, not at {position}: a gap or a reordering",
                    event.position
                )));
            }
            self.seen(event)?;
        }
        if events.len() < max.min(self.page_cap) {
            let end = from.0 + events.len() as u64;
            if events.is_empty() {
                // Nothing at `from`: the log ended at or before it, which says nothing
                // of how far before.
                self.nothing_at(end)?;
            } else {
                self.count(end)?;
            }
        }
        Ok(())
    }

    /// The store held `count` events (positions below it) at some moment of the call.
    fn count(&self, count: u64) -> Result<(), Violation> {
        if count > 0 {
            match self.stored.at_position(GlobalPosition(count - 1)) {
                Some(last) if self.could_precede(last) => {}
                _ => {
                    return Err(self.fail(format!(
                        "it reported {count} event(s) readable; the store holds {}",
                        self.stored.events.len()
                    )));
                }
            }
        }
        self.nothing_at(count)
    }

    /// No event at `position` was certainly committed before this call began.
    fn nothing_at(&self, position: u64) -> Result<(), Violation> {
        if let Some(next) = self.stored.at_position(GlobalPosition(position))
            && self.certainly_before(next)
        {
            return Err(self.fail(format!(
                "it found nothing at {position}, but event {} there had been acknowledged before the call{} (a stale answer)",
                next.id,
                self.acknowledgement(next)
            )));
        }
        Ok(())
    }

    fn absent(&self, id: EventId) -> Result<(), Violation> {
        if let Some(&index) = self.stored.by_id.get(&id)
            && self.certainly_before(&self.stored.events[index])
        {
            return Err(self.fail(format!(
                "it did not find event {id}, acknowledged before the call"
            )));
        }
        Ok(())
    }

    /// A loaded snapshot is one some caller saved for this stream, at a version the
    /// stream holds.
    fn snapshot(
        &self,
        stream: &StreamId,
        snapshot: &Snapshot,
        operations: &[Operation],
    ) -> Result<(), Violation> {
        let mut saved_by_recorded = false;
        let mut saved_exactly = false;
        for other in operations {
            if let Call::SaveSnapshot {
                stream: saved_stream,
                snapshot: saved,
            } = &other.call
                && saved_stream == stream
            {
                saved_by_recorded = true;
                if saved == snapshot && other.invoked < self.returned {
                    saved_exactly = true;
                }
            }
        }
        if saved_by_recorded && !saved_exactly {
            return Err(self.fail(format!(
                "it loaded a snapshot at {} (schema {}, {} bytes) that no caller saved",
                snapshot.version,
                snapshot.schema_version,
                snapshot.state.len()
            )));
        }
        if snapshot.version.0 >= self.stored.length(stream.as_str()) {
            return Err(self.fail(format!(
                "it loaded a snapshot at {}, past the stream's end ({} event(s))",
                snapshot.version,
                self.stored.length(stream.as_str())
            )));
        }
        Ok(())
    }
}

impl fmt::Display for HistoryStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} operations on {} streams: {} appends acknowledged, {} refused, {} outcomes unknown ({} settled), {} reads checked, {} events compared",
            self.operations,
            self.streams,
            self.appends_acknowledged,
            self.appends_refused,
            self.outcomes_unknown,
            self.unknowns_settled,
            self.reads_checked,
            self.events_compared
        )
    }
}

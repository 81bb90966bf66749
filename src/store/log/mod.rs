//! The embedded durable log: the default backend.
//!
//! Appends are checked by the pure [`StoreIndex`], encoded as one record each and queued.
//! One flusher at a time takes everything queued — a *group* — writes it with one
//! positioned write per segment and makes it durable with one `fdatasync`, then
//! acknowledges every append in the group. Readers only ever see acknowledged events.
//!
//! A failed write or sync poisons the store: the group's appenders get
//! [`AppendError::OutcomeUnknown`] and every later write [`AppendError::Unavailable`]
//! until the log is reopened, because after a failed fsync the kernel's view of the file
//! can no longer be trusted. Recovery then decides from what is really on disk.

mod format;
mod recovery;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::ops::ControlFlow;
use std::path::Path;
#[cfg(not(madsim))]
use std::sync::Condvar;
use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(madsim))]
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot};

use crate::core::index::{AppendPlan, StoreIndex};
use crate::core::limits::Limits;
use crate::core::types::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, EventView, ExpectedVersion,
    GlobalPosition, Query, RecordedEvent, Snapshot, StreamId, StreamVersion,
};
use crate::signal::Counter;
use crate::storage::{DirStorage, PAGE_BYTES, Spare, Storage, StorageFile};
use crate::store::{AppendError, EventStore, ReadError, SnapshotError};

pub use format::{FORMAT_VERSION, SEGMENT_HEADER_BYTES};

const SEGMENT_SUFFIX: &str = ".evlog";

/// The longest a flusher waits for just-answered writers to append again before it starts
/// the next group (see `Shared::linger`).
#[cfg(not(madsim))]
const LINGER_MAX: Duration = Duration::from_micros(300);

/// A group with at most this many appenders is answered from the flusher's own thread.
#[cfg(not(madsim))]
const ANSWER_INLINE_MAX: usize = 2;

/// How a log is laid out and how much it buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub limits: Limits,
    /// Size of each preallocated segment file.
    pub segment_bytes: u64,
    /// Encoded bytes that may wait for the next group commit; appenders beyond it wait.
    pub group_commit_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            limits: Limits::default(),
            segment_bytes: 64 * 1024 * 1024,
            group_commit_bytes_max: 8 * 1024 * 1024,
        }
    }
}

impl LogConfig {
    /// The largest record the limits allow: an append or a snapshot.
    fn record_bytes_max(&self) -> usize {
        let limits = &self.limits;
        let per_event_overhead = 16 + 1 + 48 + 8 + 2 + 2 + 4 + 2 * limits.tags_per_event_max;
        let append = limits.append_bytes_max
            + limits.events_per_append_max * per_event_overhead
            + 24
            + limits.stream_id_bytes_max;
        let snapshot = limits.snapshot_bytes_max + limits.stream_id_bytes_max + 18;
        format::record_bytes(append.max(snapshot))
    }

    fn validate(&self) -> Result<(), OpenError> {
        // Every length the log encodes must fit its field, or a record would be written
        // whose checksum passes and whose framing is wrong.
        let limits = &self.limits;
        for (name, limit, width) in [
            (
                "stream_id_bytes_max",
                limits.stream_id_bytes_max,
                format::STR_BYTES_MAX,
            ),
            (
                "event_type_bytes_max",
                limits.event_type_bytes_max,
                format::STR_BYTES_MAX,
            ),
            ("tag_bytes_max", limits.tag_bytes_max, format::STR_BYTES_MAX),
            (
                "tags_per_event_max",
                limits.tags_per_event_max,
                format::TAGS_MAX,
            ),
            (
                "payload_bytes_max",
                limits.payload_bytes_max,
                format::LEN32_MAX,
            ),
            (
                "events_per_append_max",
                limits.events_per_append_max,
                format::LEN32_MAX,
            ),
            (
                "snapshot_bytes_max",
                limits.snapshot_bytes_max,
                format::LEN32_MAX,
            ),
        ] {
            if limit > width {
                return Err(OpenError::Config(format!(
                    "{name} {limit} does not fit the log's {width}-at-most field for it"
                )));
            }
        }
        let record_max = self.record_bytes_max() as u64;
        if self.segment_bytes < SEGMENT_HEADER_BYTES + record_max {
            return Err(OpenError::Config(format!(
                "segment_bytes {} cannot hold the largest record the limits allow ({record_max} bytes plus a {SEGMENT_HEADER_BYTES}-byte header)",
                self.segment_bytes
            )));
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return Err(OpenError::Config(format!(
                "segment_bytes {} exceeds 4 GiB",
                self.segment_bytes
            )));
        }
        if (self.group_commit_bytes_max as u64) < record_max {
            return Err(OpenError::Config(format!(
                "group_commit_bytes_max {} is smaller than the largest record ({record_max} bytes)",
                self.group_commit_bytes_max
            )));
        }
        Ok(())
    }
}

/// Why a log did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("I/O error on {file}: {source}")]
    Io { file: String, source: io::Error },
    /// Damage that is not a torn tail. Nothing was changed; the file needs attention.
    #[error("corrupt log: {file} at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("invalid log configuration: {0}")]
    Config(String),
}

/// Where one event's record lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    segment: u32,
    offset: u32,
    record_bytes: u32,
    event_index: u32,
}

/// Consecutive events of one stream in one record: what a replay reads with one read.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// The record, at the run's first event (`event_index`: where the run starts in it).
    record: Location,
    count: u32,
    first_version: StreamVersion,
    first_position: GlobalPosition,
}

thread_local! {
    /// The record buffer of replays on this thread, kept from one replay to the next:
    /// zeroing a fresh one cost a short replay more than its reads.
    static REPLAY_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A replay buffer larger than this (a huge record) is not kept.
const REPLAY_BUFFER_KEPT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The segment files, shared with readers that work outside the lock.
type Segments = Vec<Arc<dyn StorageFile>>;

/// Events a replay locates per lock acquisition, so a long replay never holds the lock
/// (and appenders) for long.
const VISIT_CHUNK_EVENTS: usize = 64 * 1024;

#[derive(Clone, Copy, Debug)]
struct SnapshotSlot {
    version: StreamVersion,
    location: Location,
}

/// Bytes queued for one segment. `create` asks the flusher to create the segment first.
#[derive(Debug)]
struct Chunk {
    segment: u32,
    offset: u64,
    bytes: Vec<u8>,
    create: Option<GlobalPosition>,
}

#[derive(Debug)]
enum Reply {
    Append(
        oneshot::Sender<Result<AppendResult, AppendError>>,
        AppendResult,
    ),
    Snapshot(
        oneshot::Sender<Result<(), SnapshotError>>,
        StreamId,
        SnapshotSlot,
    ),
    /// An append refused on a state that included events of a group in flight: answered
    /// once they are durable.
    Refusal(
        oneshot::Sender<Result<AppendResult, AppendError>>,
        AppendError,
    ),
}

#[derive(Debug)]
struct Waiter {
    /// The group whose durability this waiter needs.
    group: u64,
    /// Group-commit byte permits to give back once the group is done.
    permits: usize,
    reply: Reply,
}

#[derive(Debug)]
struct LogState {
    index: StoreIndex,
    locations: Vec<Location>,
    snapshots: BTreeMap<StreamId, SnapshotSlot>,
    segments: Vec<Arc<dyn StorageFile>>,
    /// Segment and offset of the next record, counting queued records.
    tail_segment: u32,
    tail_offset: u64,
    queued: Vec<Chunk>,
    /// The group now accepting records; the one being flushed is `open_group - 1`.
    open_group: u64,
    durable_event_count: u64,
    /// In the order registered, which is group order.
    waiters: Vec<Waiter>,
    flushing: bool,
    /// While the flusher lingers: the number of waiters at which to wake it; 0 otherwise.
    #[cfg(not(madsim))]
    linger_until: usize,
    failure: Option<String>,
}

#[derive(Debug)]
struct Shared {
    /// Opening cut a torn tail.
    torn_tail_cut: bool,
    storage: Arc<dyn Storage>,
    config: LogConfig,
    state: Mutex<LogState>,
    durable_event_count: Counter,
    /// Borrowed by appenders, never cloned: an `Arc` count bumped by every append is one
    /// more cache line the cores trade back and forth.
    group_commit_permits: Semaphore,
    /// Wakes a lingering flusher once `state.linger_until` writers wait (see
    /// `Shared::linger`).
    #[cfg(not(madsim))]
    returned: Condvar,
    /// The next segment, made ready while the current one fills so that rolling over does
    /// not stall a group behind a segment's worth of zeros. Only the flusher touches it.
    spare: Mutex<Option<SpareSegment>>,
}

/// A segment being (or done being) prepared ahead of its roll.
#[derive(Debug)]
struct SpareSegment {
    segment: u32,
    preparation: Preparation,
}

#[derive(Debug)]
enum Preparation {
    /// On its own thread, so the flusher keeps committing groups meanwhile.
    #[cfg(not(madsim))]
    Thread(std::thread::JoinHandle<io::Result<Spare>>),
    /// The simulator prepares at once: there are no threads to run it beside the flusher.
    #[cfg_attr(not(madsim), allow(dead_code))]
    Done(io::Result<Spare>),
}

impl SpareSegment {
    /// The prepared file, waiting for its thread if it is not done.
    fn finish(self) -> io::Result<Spare> {
        match self.preparation {
            #[cfg(not(madsim))]
            Preparation::Thread(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("preparing a segment panicked"))),
            Preparation::Done(result) => result,
        }
    }
}

impl Drop for Shared {
    /// No preparation outlives its log: a spare's thread may still be writing zeros.
    fn drop(&mut self) {
        let spare = self.spare.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(spare) = spare.take() {
            let _ = spare.finish();
        }
    }
}

/// The embedded durable log backend. Clones share one log.
#[derive(Clone, Debug)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl LogStore {
    /// Opens (or creates) the log in directory `dir`.
    pub fn open_dir(dir: impl AsRef<Path>, config: LogConfig) -> Result<LogStore, OpenError> {
        let dir = dir.as_ref();
        let storage = DirStorage::new(dir).map_err(|source| OpenError::Io {
            file: dir.display().to_string(),
            source,
        })?;
        LogStore::open(Arc::new(storage), config)
    }

    /// Opens the log on `storage`: recovers the index, cuts a torn tail, refuses damage.
    pub fn open(storage: Arc<dyn Storage>, config: LogConfig) -> Result<LogStore, OpenError> {
        config.validate()?;
        let recovered = recovery::recover(&*storage, &config)?;
        let event_count = recovered.index.event_count();
        let torn_tail_cut = recovered.torn_tails_cut > 0;
        let (tail_segment, tail_offset) = match recovered.tail_offset {
            Some(offset) => (recovered.segments.len() as u32 - 1, offset),
            // No segment yet: the first record creates segment 0.
            None => (0, config.segment_bytes),
        };
        let state = LogState {
            index: recovered.index,
            locations: recovered.locations,
            snapshots: recovered.snapshots,
            segments: recovered.segments,
            tail_segment,
            tail_offset,
            queued: Vec::new(),
            open_group: 1,
            durable_event_count: event_count,
            waiters: Vec::new(),
            flushing: false,
            #[cfg(not(madsim))]
            linger_until: 0,
            failure: None,
        };
        let group_commit_permits = Semaphore::new(config.group_commit_bytes_max);
        Ok(LogStore {
            shared: Arc::new(Shared {
                storage,
                config,
                state: Mutex::new(state),
                durable_event_count: Counter::new(event_count),
                group_commit_permits,
                #[cfg(not(madsim))]
                returned: Condvar::new(),
                spare: Mutex::new(None),
                torn_tail_cut,
            }),
        })
    }

    /// Whether opening cut a torn tail (the unfinished last write of a crash).
    pub fn cut_torn_tail(&self) -> bool {
        self.shared.torn_tail_cut
    }

    /// Why the log stopped accepting writes (a failed write or sync), if it did. A poisoned
    /// log stays poisoned: the owner should exit and reopen — recovery decides from what is
    /// really on disk (crash-only).
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failure.clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.config.limits
    }

    fn describe_segment(&self, segment: u32) -> String {
        self.shared
            .storage
            .describe(&recovery::segment_name(segment))
    }

    /// Reads and decodes the events at `positions` (all durable).
    fn read_positions(
        &self,
        positions: &[GlobalPosition],
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let (targets, segments) = {
            let state = self.shared.lock();
            let targets: Vec<_> = positions
                .iter()
                .map(|&p| {
                    let location = state.index.locate(p).expect("indexed position");
                    (location, state.locations[p.0 as usize])
                })
                .collect();
            (targets, state.segments.clone())
        };
        let mut events = Vec::with_capacity(targets.len());
        // The record last decoded; each event is moved out of it, not copied (positions
        // are distinct, so none is wanted twice — if one were, its record is read again).
        let mut cached: Option<(Location, Vec<Option<EventData>>)> = None;
        for (where_, location) in targets {
            let index = location.event_index as usize;
            let from_cache = cached
                .as_mut()
                .filter(|(l, _)| l.segment == location.segment && l.offset == location.offset)
                .and_then(|(_, record_events)| record_events.get_mut(index)?.take());
            let data = match from_cache {
                Some(data) => data,
                None => {
                    let decoded = self.read_record(&segments, location, format::decode_append)?;
                    let mut record_events: Vec<Option<EventData>> =
                        decoded.events.into_iter().map(Some).collect();
                    let data = record_events
                        .get_mut(index)
                        .and_then(Option::take)
                        .ok_or_else(|| ReadError::Corrupt {
                            file: self.describe_segment(location.segment),
                            offset: u64::from(location.offset),
                            reason: format!("the record holds no event #{index}"),
                        })?;
                    cached = Some((location, record_events));
                    data
                }
            };
            events.push(RecordedEvent::from_data(
                where_.stream,
                where_.version,
                where_.position,
                data,
            ));
        }
        Ok(events)
    }

    /// Reads one record, verifies its checksum and decodes its body with `decode`. Damage
    /// is reported with the segment file and the record's offset.
    fn read_record<T>(
        &self,
        segments: &[Arc<dyn StorageFile>],
        location: Location,
        decode: impl FnOnce(&[u8]) -> Result<T, format::FormatError>,
    ) -> Result<T, ReadError> {
        let mut buffer = Vec::new();
        let body = self.read_record_into(segments, location, &mut buffer)?;
        decode(body).map_err(|e| self.corrupt(location, e))
    }

    /// Reads one record into `buffer` (grown, never shrunk, so a reader reuses it) and
    /// returns its body once both checksums and the padding are verified.
    fn read_record_into<'b>(
        &self,
        segments: &[Arc<dyn StorageFile>],
        location: Location,
        buffer: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], ReadError> {
        let file = &segments[location.segment as usize];
        let record_bytes = location.record_bytes as usize;
        if buffer.len() < record_bytes {
            buffer.resize(record_bytes, 0);
        }
        let record = &mut buffer[..record_bytes];
        file.read_exact_at(record, u64::from(location.offset))
            .map_err(|e| {
                ReadError::Unavailable(format!("{}: {e}", self.describe_segment(location.segment)))
            })?;
        format::verify_record(record).map_err(|e| self.corrupt(location, e))
    }

    fn corrupt(&self, location: Location, error: format::FormatError) -> ReadError {
        ReadError::Corrupt {
            file: self.describe_segment(location.segment),
            offset: u64::from(location.offset),
            reason: error.to_string(),
        }
    }

    /// The runs of consecutive events of one record among `stream`'s durable events from
    /// `from`, at most `max` events. `None`: no such stream.
    fn stream_runs(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Option<(Vec<Run>, Segments)> {
        let state = self.shared.lock();
        let durable_len = state.durable_stream_len(stream)?;
        let start = (from.0 as usize).min(durable_len);
        let count = max.min(durable_len - start);
        let positions = state
            .index
            .stream_positions(stream, StreamVersion(start as u64), count)
            .expect("stream exists");
        let mut runs: Vec<Run> = Vec::new();
        let mut done = 0;
        while done < positions.len() {
            let first_position = positions[done];
            let record = state.locations[first_position.0 as usize];
            // Events `done + j` continue the run while their positions are consecutive and
            // in the same record; both hold for a prefix of `j` (positions increase, and a
            // record holds consecutive positions), so the run's end is a binary search.
            let continues = |j: usize| {
                let position = positions[done + j];
                let location = state.locations[position.0 as usize];
                position.0 == first_position.0 + j as u64
                    && location.segment == record.segment
                    && location.offset == record.offset
            };
            let (mut holds, mut fails) = (0, positions.len() - done);
            while fails - holds > 1 {
                let middle = holds + (fails - holds) / 2;
                if continues(middle) {
                    holds = middle;
                } else {
                    fails = middle;
                }
            }
            runs.push(Run {
                record,
                count: fails as u32,
                first_version: StreamVersion((start + done) as u64),
                first_position,
            });
            done += fails;
        }
        Some((runs, state.segments.clone()))
    }

    /// [`EventStore::visit_stream`], synchronously (reads are positioned reads, as in
    /// every read of the log): a plain loop, not an async state machine.
    fn visit_stream_now<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        visit: &mut F,
    ) -> Result<u64, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()>,
    {
        // What is durable now bounds the visit; it is located a chunk at a time.
        let end = self
            .shared
            .lock()
            .durable_stream_len(stream)
            .ok_or_else(|| ReadError::StreamNotFound(stream.clone()))? as u64;
        let mut buffer = REPLAY_BUFFER.with(RefCell::take);
        let visited = self.visit_until(stream, from, end, visit, &mut buffer);
        if buffer.len() <= REPLAY_BUFFER_KEPT_BYTES_MAX {
            REPLAY_BUFFER.with(|kept| kept.replace(buffer));
        }
        visited
    }

    fn visit_until<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        end: u64,
        visit: &mut F,
        buffer: &mut Vec<u8>,
    ) -> Result<u64, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()>,
    {
        let mut next = from;
        let mut visited = 0;
        while next.0 < end {
            let chunk = VISIT_CHUNK_EVENTS.min((end - next.0) as usize);
            let (runs, segments) = self
                .stream_runs(stream, next, chunk)
                .expect("a stream is never removed");
            let last = *runs.last().expect("a chunk holds at least one event");
            if self
                .visit_runs(stream, &runs, &segments, visit, &mut visited, buffer)?
                .is_break()
            {
                break;
            }
            next = StreamVersion(last.first_version.0 + u64::from(last.count));
        }
        Ok(visited)
    }

    /// Visits the events of `runs`, reading their records one by one into `buffer` — or,
    /// for a long replay, ahead on a second thread.
    fn visit_runs<F>(
        &self,
        stream: &StreamId,
        runs: &[Run],
        segments: &Segments,
        visit: &mut F,
        visited: &mut u64,
        buffer: &mut Vec<u8>,
    ) -> Result<ControlFlow<()>, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()>,
    {
        // The simulator has no second thread to read on (and its disk is memory anyway).
        #[cfg(not(madsim))]
        if read_ahead_pays(runs) {
            return self.visit_runs_reading_ahead(stream, runs, segments, visit, visited);
        }
        for run in runs {
            let body = self.read_record_into(segments, run.record, buffer)?;
            if self
                .visit_run(stream, run, body, visit, visited)?
                .is_break()
            {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Visits the events of `run` in the verified record `body`, counting them in `visited`.
    fn visit_run<F>(
        &self,
        stream: &StreamId,
        run: &Run,
        body: &[u8],
        visit: &mut F,
        visited: &mut u64,
    ) -> Result<ControlFlow<()>, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()>,
    {
        let (header, mut events) =
            format::decode_append_header(body).map_err(|e| self.corrupt(run.record, e))?;
        // Both sides of the boundary: the record is the one the index points at.
        assert_eq!(
            header.stream, *stream,
            "index points at another stream's record"
        );
        let first_index = run.record.event_index;
        assert_eq!(
            header.first_version.0 + u64::from(first_index),
            run.first_version.0,
            "index and record disagree on the version"
        );
        assert_eq!(
            header.first_position.0 + u64::from(first_index),
            run.first_position.0,
            "index and record disagree on the position"
        );
        for _ in 0..first_index {
            next_fields(&mut events, header.event_count)
                .map_err(|e| self.corrupt(run.record, e))?;
        }
        for offset in 0..u64::from(run.count) {
            let fields = next_fields(&mut events, header.event_count)
                .map_err(|e| self.corrupt(run.record, e))?;
            *visited += 1;
            let view = EventView::new(
                StreamVersion(run.first_version.0 + offset),
                GlobalPosition(run.first_position.0 + offset),
                fields.id,
                fields.event_type,
                fields.payload,
                fields.metadata,
            );
            if visit(view).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// [`visit_run`](Self::visit_run) over `runs`, with the records read and verified on a
    /// second thread, a few records ahead: copying a long stream out of the page cache and
    /// checking its checksums overlaps with decoding it. Nothing reaches `visit` before its
    /// record is verified; the reader stops when the visit does.
    #[cfg(not(madsim))]
    fn visit_runs_reading_ahead<F>(
        &self,
        stream: &StreamId,
        runs: &[Run],
        segments: &Segments,
        visit: &mut F,
        visited: &mut u64,
    ) -> Result<ControlFlow<()>, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()>,
    {
        use std::sync::mpsc::sync_channel;
        type Read = Result<(Vec<u8>, usize), ReadError>;
        let (read_tx, read_rx) = sync_channel::<Read>(READ_AHEAD_RECORDS);
        let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(READ_AHEAD_RECORDS + 1);
        for _ in 0..=READ_AHEAD_RECORDS {
            spare_tx.send(Vec::new()).expect("room for every buffer");
        }
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for run in runs {
                    // No spare buffer back: the visit ended.
                    let Ok(mut buffer) = spare_rx.recv() else {
                        return;
                    };
                    let read = self
                        .read_record_into(segments, run.record, &mut buffer)
                        .map(<[u8]>::len);
                    let failed = read.is_err();
                    if read_tx.send(read.map(|len| (buffer, len))).is_err() || failed {
                        return;
                    }
                }
            });
            // Owns this side's channel ends, so that they are dropped when the visit ends,
            // however it ends — which is what stops a reader waiting for a spare buffer or
            // for room to send — before the scope waits for the reader.
            let mut consume = move || {
                for run in runs {
                    let (buffer, body_len) =
                        read_rx.recv().expect("the reader sends every record")?;
                    let body = &buffer[format::RECORD_HEADER_BYTES..][..body_len];
                    let flow = self.visit_run(stream, run, body, visit, visited)?;
                    if flow.is_break() {
                        return Ok(flow);
                    }
                    // The reader may have finished and dropped its end: nothing is missed.
                    let _ = spare_tx.send(buffer);
                }
                Ok(ControlFlow::Continue(()))
            };
            consume()
        })
    }

    /// Queues `bytes` as the next record and returns where it goes. Rolls to a new segment
    /// when the record does not fit in the current one.
    fn queue_record(state: &mut LogState, segment_bytes: u64, bytes: Vec<u8>) -> Location {
        let record_bytes = bytes.len() as u64;
        let mut create = None;
        if state.tail_offset + record_bytes > segment_bytes {
            state.tail_segment = if state.segments.is_empty() && state.queued.is_empty() {
                0
            } else {
                state.tail_segment + 1
            };
            state.tail_offset = SEGMENT_HEADER_BYTES;
            create = Some(GlobalPosition(state.index.event_count()));
        }
        let location = Location {
            segment: state.tail_segment,
            offset: state.tail_offset as u32,
            record_bytes: record_bytes as u32,
            event_index: 0,
        };
        match state.queued.last_mut() {
            Some(chunk)
                if create.is_none()
                    && chunk.segment == location.segment
                    && chunk.offset + chunk.bytes.len() as u64 == state.tail_offset =>
            {
                chunk.bytes.extend_from_slice(&bytes);
            }
            _ => state.queued.push(Chunk {
                segment: location.segment,
                offset: state.tail_offset,
                bytes,
                create,
            }),
        }
        state.tail_offset += record_bytes;
        location
    }
}

/// Records a read-ahead replay keeps in flight (each in its own buffer).
#[cfg(not(madsim))]
const READ_AHEAD_RECORDS: usize = 2;
/// A replay reads ahead on a second thread only when it reads at least this many bytes:
/// below it, starting the thread costs more than the overlap saves.
#[cfg(not(madsim))]
const READ_AHEAD_BYTES_MIN: u64 = 4 * 1024 * 1024;

/// Whether reading `runs` ahead on a second thread pays for the thread.
#[cfg(not(madsim))]
fn read_ahead_pays(runs: &[Run]) -> bool {
    runs.len() > READ_AHEAD_RECORDS
        && runs
            .iter()
            .map(|run| u64::from(run.record.record_bytes))
            .sum::<u64>()
            >= READ_AHEAD_BYTES_MIN
}

/// The next event of a record that announced `event_count`; too few is an error. Always
/// inlined: an event's fields returned through memory stall the replay loop.
#[inline(always)]
fn next_fields<'a>(
    events: &mut format::AppendEvents<'a>,
    event_count: u32,
) -> Result<format::EventFields<'a>, format::FormatError> {
    events
        .next()
        .unwrap_or(Err(format::FormatError::BadLength(u64::from(event_count))))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter and makes sure a flusher is running.
    fn enqueue_waiter(self: &Arc<Self>, mut state: MutexGuard<'_, LogState>, waiter: Waiter) {
        state.waiters.push(waiter);
        #[cfg(not(madsim))]
        if state.linger_until != 0 && state.waiters.len() >= state.linger_until {
            state.linger_until = 0;
            self.returned.notify_one();
        }
        if !state.flushing {
            state.flushing = true;
            drop(state);
            spawn_flusher(Arc::clone(self));
        }
    }

    /// Flushes groups until nothing is queued. Runs on a blocking thread (real I/O) or as a
    /// simulator task; never inside an appender's future, so cancelling an appender cannot
    /// strand the group.
    #[cfg(not(madsim))]
    fn flush_until_idle(&self) {
        let mut answered = 0;
        let mut sync_time = Duration::ZERO;
        loop {
            self.linger(answered, sync_time);
            let Some(mut group) = self.take_group() else {
                return;
            };
            let started = Instant::now();
            let written = self.write_group(&mut group.chunks, group.segments.clone());
            let synced = written.and_then(|written| self.sync_group(&written).map(|()| written));
            sync_time = started.elapsed();
            match self.finish_group(group, synced) {
                Some(count) => answered = count,
                None => return,
            }
        }
    }

    /// Waits, after answering `answered` writers, until most of them have appended again
    /// — at most half a sync (`sync_time`), never more than [`LINGER_MAX`].
    ///
    /// Without it, the writers just answered find the next sync already running with
    /// whoever else was queued, and wait for it to end before theirs can start: writers
    /// split into two alternating groups and every append waits about two syncs. Waiting
    /// a fraction of a sync lets one group carry them all (BENCHMARKS.md measures it at 16
    /// appenders). A lone writer has nobody to wait for.
    #[cfg(not(madsim))]
    fn linger(&self, answered: usize, sync_time: Duration) {
        if answered < 2 {
            return;
        }
        // No group is in flight while the flusher lingers, so every waiter is one that has
        // appended to the open group since. The flusher sleeps rather than spins: on a
        // machine with as many runtime workers as cores, a spinning flusher takes a core
        // from the very writers it waits for.
        let target = (answered * 3).div_ceil(4);
        let mut state = self.lock();
        if state.waiters.len() >= target {
            return;
        }
        state.linger_until = target;
        let (mut state, _) = self
            .returned
            .wait_timeout_while(state, (sync_time / 2).min(LINGER_MAX), |state| {
                state.waiters.len() < target
            })
            .unwrap_or_else(|p| p.into_inner());
        state.linger_until = 0;
    }

    /// The simulator's flusher: like [`flush_until_idle`](Self::flush_until_idle), but a
    /// slow disk's sync latency passes in virtual time between the write and the sync —
    /// the window in which a crash finds written but unsynced bytes.
    #[cfg(madsim)]
    async fn flush_until_idle_simulated(&self) {
        while let Some(mut group) = self.take_group() {
            let written = self.write_group(&mut group.chunks, group.segments.clone());
            crate::faultpoint::reach(crate::faultpoint::FaultPoint::GroupWritten, "log").await;
            let latency = self.storage.sync_latency();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let synced = written.and_then(|written| self.sync_group(&written).map(|()| written));
            if synced.is_ok() {
                crate::faultpoint::reach(crate::faultpoint::FaultPoint::GroupSynced, "log").await;
            }
            if self.finish_group(group, synced).is_none() {
                return;
            }
        }
    }

    /// Takes everything queued as the next group; `None` (and no longer flushing) when
    /// nothing is queued and nobody waits.
    fn take_group(&self) -> Option<Group> {
        let mut state = self.lock();
        let open_group = state.open_group;
        if state.queued.is_empty() && !state.waiters.iter().any(|w| w.group == open_group) {
            state.flushing = false;
            return None;
        }
        state.open_group += 1;
        Some(Group {
            chunks: std::mem::take(&mut state.queued),
            number: open_group,
            event_count: state.index.event_count(),
            segments: state.segments.clone(),
        })
    }

    /// Publishes a durable group and acknowledges its waiters, or poisons the log on
    /// failure. Returns how many writers were answered, or `None` to stop flushing.
    fn finish_group(&self, group: Group, synced: io::Result<Written>) -> Option<usize> {
        let mut state = self.lock();
        match synced {
            Ok(written) => {
                state.segments.extend(written.new_segments);
                state.durable_event_count = group.event_count;
                // Publish before acknowledging: an appender that got its answer must
                // find its events in every read, including `event_count`.
                self.durable_event_count.advance_to(group.event_count);
                // Waiters are registered in group order, so the group's are a prefix; the
                // rest stay where they are, in a vector that keeps its capacity for the
                // writers the next group registers.
                let done_count = state.waiters.partition_point(|w| w.group <= group.number);
                let done: Vec<Waiter> = state.waiters.drain(..done_count).collect();
                let permits = done.iter().map(|w| w.permits).sum();
                // Snapshots are published under the lock; appenders are answered after it
                // is released — waking a task can cost a system call, and hundreds of them
                // under the lock would keep every appender of the next group waiting.
                let answers: Vec<_> = done
                    .into_iter()
                    .filter_map(|waiter| complete(&mut state, waiter.reply))
                    .collect();
                drop(state);
                self.group_commit_permits.add_permits(permits);
                let answered = answers.len();
                send_answers(answers);
                Some(answered)
            }
            Err(error) => {
                let message = format!("group commit failed: {error}");
                state.failure = Some(message.clone());
                state.flushing = false;
                state.queued.clear();
                let failed = std::mem::take(&mut state.waiters);
                drop(state);
                let permits = failed.iter().map(|w| w.permits).sum();
                for waiter in failed {
                    fail(waiter.reply, &message);
                }
                self.group_commit_permits.add_permits(permits);
                None
            }
        }
    }

    /// Writes one group: creates new segments and issues one write per chunk.
    ///
    /// Each write is padded with zeros to the end of its last page (the segment holds zeros
    /// past its tail anyway, so the bytes do not change): a write then never covers part of
    /// a page no earlier write filled, which the kernel would first read back from the disk
    /// whenever the zero fill went around the page cache (`DirStorage::prepare`).
    fn write_group(
        &self,
        chunks: &mut [Chunk],
        mut segments: Vec<Arc<dyn StorageFile>>,
    ) -> io::Result<Written> {
        let known = segments.len();
        for chunk in chunks.iter_mut() {
            let end = chunk.offset + chunk.bytes.len() as u64;
            let padded_end = end
                .next_multiple_of(PAGE_BYTES as u64)
                .min(self.config.segment_bytes);
            chunk
                .bytes
                .resize((padded_end.max(end) - chunk.offset) as usize, 0);
        }
        let mut touched: Vec<Arc<dyn StorageFile>> = Vec::new();
        let mut touched_segments: Vec<u32> = Vec::new();
        for chunk in chunks.iter() {
            if let Some(first_position) = chunk.create {
                assert_eq!(
                    chunk.segment as usize,
                    segments.len(),
                    "segments roll in order"
                );
                let header = format::encode_segment_header(&format::SegmentHeader {
                    index: chunk.segment,
                    first_position,
                    segment_bytes: self.config.segment_bytes,
                });
                let file = match self.take_spare(chunk.segment) {
                    Some(Ok(spare)) => self.storage.install(spare, &header)?,
                    // Nothing prepared, or preparing failed: create it now (and fail the
                    // group if that fails too).
                    _ => self.storage.create(
                        &recovery::segment_name(chunk.segment),
                        self.config.segment_bytes,
                        &header,
                    )?,
                };
                segments.push(file);
            }
            segments[chunk.segment as usize].write_all_at(&chunk.bytes, chunk.offset)?;
            if touched_segments.last() != Some(&chunk.segment) {
                touched_segments.push(chunk.segment);
                touched.push(Arc::clone(&segments[chunk.segment as usize]));
            }
        }
        if let Some(last) = chunks.last()
            && last.offset + last.bytes.len() as u64 > self.config.segment_bytes / 2
        {
            self.prepare_spare(last.segment + 1);
        }
        Ok(Written {
            new_segments: segments.split_off(known),
            touched,
        })
    }

    /// Starts preparing segment `segment` unless it already is: on a thread of its own,
    /// or at once in the simulator.
    fn prepare_spare(&self, segment: u32) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.as_ref().is_some_and(|spare| spare.segment == segment) {
            return;
        }
        if let Some(stale) = spare.take() {
            // Prepared for a segment that was created without it: its temporary file is
            // removed by the next open.
            let _ = stale.finish();
        }
        let name = recovery::segment_name(segment);
        let len = self.config.segment_bytes;
        #[cfg(not(madsim))]
        let preparation = {
            let storage = Arc::clone(&self.storage);
            Preparation::Thread(std::thread::spawn(move || storage.prepare(&name, len)))
        };
        #[cfg(madsim)]
        let preparation = Preparation::Done(self.storage.prepare(&name, len));
        *spare = Some(SpareSegment {
            segment,
            preparation,
        });
    }

    /// The spare prepared for `segment`, if there is one; waits for it to be ready.
    fn take_spare(&self, segment: u32) -> Option<io::Result<Spare>> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.as_ref()?.segment != segment {
            return None;
        }
        spare.take().map(SpareSegment::finish)
    }

    /// Makes a written group durable: one sync per segment it touched.
    fn sync_group(&self, written: &Written) -> io::Result<()> {
        for file in &written.touched {
            file.sync_data()?;
        }
        Ok(())
    }
}

/// One group commit in flight.
struct Group {
    chunks: Vec<Chunk>,
    number: u64,
    event_count: u64,
    segments: Vec<Arc<dyn StorageFile>>,
}

/// What writing a group produced.
struct Written {
    new_segments: Vec<Arc<dyn StorageFile>>,
    touched: Vec<Arc<dyn StorageFile>>,
}

/// An appender's answer, to send once the state lock is released.
type AppendAnswer = (
    oneshot::Sender<Result<AppendResult, AppendError>>,
    AppendResult,
);

/// Completes a durable waiter: publishes a snapshot (and answers its writer) at once, and
/// returns an appender's answer for the caller to send after releasing the lock.
fn complete(state: &mut LogState, reply: Reply) -> Option<AppendAnswer> {
    match reply {
        Reply::Append(sender, result) => Some((sender, result)),
        Reply::Snapshot(sender, stream, slot) => {
            let existing = state.snapshots.get(&stream).map(|s| s.version);
            if crate::store::snapshot_replaces(existing, slot.version) {
                state.snapshots.insert(stream, slot);
            }
            let _ = sender.send(Ok(()));
            None
        }
        Reply::Refusal(sender, refusal) => {
            let _ = sender.send(Err(refusal));
            None
        }
    }
}

/// Sends a durable group's answers. A handful are sent at once; more are handed to a task
/// on the runtime, so that the flusher can start the next group's write and sync at once
/// and the appenders are woken from a worker thread (onto its own run queue) rather than
/// one by one across threads.
fn send_answers(answers: Vec<AppendAnswer>) {
    let send = |answers: Vec<AppendAnswer>| {
        for (sender, result) in answers {
            let _ = sender.send(Ok(result));
        }
    };
    #[cfg(not(madsim))]
    if answers.len() > ANSWER_INLINE_MAX {
        tokio::spawn(async move { send(answers) });
        return;
    }
    send(answers);
}

fn fail(reply: Reply, message: &str) {
    match reply {
        Reply::Append(sender, _) => {
            let _ = sender.send(Err(AppendError::OutcomeUnknown(message.to_owned())));
        }
        Reply::Snapshot(sender, _, _) => {
            let _ = sender.send(Err(SnapshotError::Unavailable(message.to_owned())));
        }
        // The refused append wrote nothing, whatever became of the group it waited for.
        Reply::Refusal(sender, _) => {
            let _ = sender.send(Err(AppendError::Unavailable(format!(
                "{message}; nothing of this append was written"
            ))));
        }
    }
}

/// The one place the log touches the runtime: real I/O runs on tokio's blocking pool; in
/// the simulator (where the disk is simulated and blocking threads would escape the
/// deterministic scheduler) it runs as an ordinary task.
fn spawn_flusher(shared: Arc<Shared>) {
    #[cfg(not(madsim))]
    tokio::task::spawn_blocking(move || shared.flush_until_idle());
    #[cfg(madsim)]
    tokio::spawn(async move { shared.flush_until_idle_simulated().await });
}

fn unavailable_if_failed(state: &LogState) -> Result<(), String> {
    match &state.failure {
        Some(message) => Err(format!("{message}; reopen the log to recover")),
        None => Ok(()),
    }
}

impl LogState {
    /// Number of `stream`'s events that are durable.
    fn durable_stream_len(&self, stream: &StreamId) -> Option<usize> {
        let all = self
            .index
            .stream_positions(stream, StreamVersion::FIRST, usize::MAX)?;
        let durable = all.partition_point(|p| p.0 < self.durable_event_count);
        (durable > 0).then_some(durable)
    }
}

impl EventStore for LogStore {
    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<&AppendCondition>,
    ) -> Result<AppendResult, AppendError> {
        let limits = &self.shared.config.limits;
        limits
            .check_append(&events)
            .map_err(AppendError::LimitExceeded)?;
        let bound = format::record_bytes(
            events.iter().map(format::event_bytes_max).sum::<usize>() + 24 + stream.as_str().len(),
        );
        let permit = self
            .shared
            .group_commit_permits
            .acquire_many(bound as u32)
            .await
            .map_err(|_| AppendError::Unavailable("log closed".into()))?;
        // Encoded before the lock is taken; under the lock only its position, version and
        // body checksum are written in (`format::place_append`).
        let mut bytes = Vec::with_capacity(bound);
        format::encode_unplaced_append(&mut bytes, stream, &events);
        assert!(bytes.len() <= bound, "record bound underestimated");
        let (sender, receiver) = oneshot::channel();
        let mut refused = false;
        'queued: {
            let mut state = self.shared.lock();
            unavailable_if_failed(&state).map_err(AppendError::Unavailable)?;
            let plan = match state
                .index
                .check_append(stream, expected, &events, condition)
            {
                Ok(plan) => plan,
                // A refusal that rests only on durable events is final now. One that may
                // rest on events of a group still in flight waits for that group: if its
                // sync fails, those events may be lost after a crash, and a refusal
                // because of them would describe a state the log never durably had (I11).
                Err(refusal) if state.index.event_count() <= state.durable_event_count => {
                    return Err(refusal);
                }
                Err(refusal) => {
                    drop(permit);
                    let group = state.open_group;
                    self.shared.enqueue_waiter(
                        state,
                        Waiter {
                            group,
                            permits: 0,
                            reply: Reply::Refusal(sender, refusal),
                        },
                    );
                    refused = true;
                    break 'queued;
                }
            };
            let result = match plan {
                AppendPlan::AlreadyWritten(result) => {
                    let end = result.first_position.0 + events.len() as u64;
                    if end <= state.durable_event_count {
                        return Ok(result);
                    }
                    // Written by an append whose group is not durable yet: wait for it.
                    result
                }
                AppendPlan::Write {
                    first_version,
                    first_position,
                } => {
                    format::place_append(&mut bytes, first_version, first_position);
                    let location =
                        LogStore::queue_record(&mut state, self.shared.config.segment_bytes, bytes);
                    let result = state.index.apply_append(stream, &events, first_position);
                    for event_index in 0..events.len() {
                        state.locations.push(Location {
                            event_index: event_index as u32,
                            ..location
                        });
                    }
                    result
                }
            };
            permit.forget();
            let group = state.open_group;
            self.shared.enqueue_waiter(
                state,
                Waiter {
                    group,
                    permits: bound,
                    reply: Reply::Append(sender, result),
                },
            );
        }
        receiver.await.unwrap_or_else(|_| {
            let stopped = "the log's flusher stopped before answering";
            Err(if refused {
                AppendError::Unavailable(format!("{stopped}; nothing of this append was written"))
            } else {
                AppendError::OutcomeUnknown(stopped.into())
            })
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let positions: Vec<GlobalPosition> = {
            let state = self.shared.lock();
            let Some(durable_len) = state.durable_stream_len(stream) else {
                return Err(ReadError::StreamNotFound(stream.clone()));
            };
            let max = max.min(state.index.limits().read_events_max);
            let start = (from.0 as usize).min(durable_len);
            let count = max.min(durable_len - start);
            state
                .index
                .stream_positions(stream, StreamVersion(start as u64), count)
                .expect("stream exists")
                .to_vec()
        };
        self.read_positions(&positions)
    }

    async fn visit_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        mut visit: F,
    ) -> Result<u64, ReadError>
    where
        F: FnMut(EventView<'_>) -> ControlFlow<()> + Send,
    {
        self.visit_stream_now(stream, from, &mut visit)
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let positions: Vec<GlobalPosition> = {
            let state = self.shared.lock();
            let max = max.min(state.index.limits().read_events_max) as u64;
            let end = from.0.saturating_add(max).min(state.durable_event_count);
            (from.0..end).map(GlobalPosition).collect()
        };
        self.read_positions(&positions)
    }

    async fn read_matching(
        &self,
        query: &Query,
        after: Option<GlobalPosition>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let positions: Vec<GlobalPosition> = {
            let state = self.shared.lock();
            let max = max.min(state.index.limits().read_events_max);
            let durable = state.durable_event_count;
            let mut positions = state.index.matching_positions(query, after, max);
            positions.retain(|p| p.0 < durable);
            positions
        };
        self.read_positions(&positions)
    }

    async fn find_event(&self, id: EventId) -> Result<Option<RecordedEvent>, ReadError> {
        let position = {
            let state = self.shared.lock();
            state
                .index
                .position_of(id)
                .filter(|p| p.0 < state.durable_event_count)
        };
        match position {
            None => Ok(None),
            Some(position) => Ok(self.read_positions(&[position])?.pop()),
        }
    }

    async fn current_version(&self, stream: &StreamId) -> Result<CurrentVersion, ReadError> {
        let state = self.shared.lock();
        Ok(match state.durable_stream_len(stream) {
            None => CurrentVersion::NoStream,
            Some(len) => CurrentVersion::Current(StreamVersion(len as u64 - 1)),
        })
    }

    async fn event_count(&self) -> Result<u64, ReadError> {
        Ok(self.shared.durable_event_count.get())
    }

    async fn wait_for_event_count_above(&self, count: u64) -> Result<(), ReadError> {
        self.shared.durable_event_count.wait_above(count).await;
        Ok(())
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        snapshot: Snapshot,
    ) -> Result<(), SnapshotError> {
        let limits = &self.shared.config.limits;
        limits
            .check_snapshot(&snapshot.state)
            .map_err(SnapshotError::LimitExceeded)?;
        let mut bytes = Vec::new();
        format::encode_snapshot(&mut bytes, stream, &snapshot);
        let permits = bytes.len();
        let permit = self
            .shared
            .group_commit_permits
            .acquire_many(permits as u32)
            .await
            .map_err(|_| SnapshotError::Unavailable("log closed".into()))?;
        let (sender, receiver) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            unavailable_if_failed(&state).map_err(SnapshotError::Unavailable)?;
            let actual = match state.durable_stream_len(stream) {
                None => CurrentVersion::NoStream,
                Some(len) => CurrentVersion::Current(StreamVersion(len as u64 - 1)),
            };
            crate::store::check_snapshot_in_stream(stream, snapshot.version, actual)?;
            let location =
                LogStore::queue_record(&mut state, self.shared.config.segment_bytes, bytes);
            permit.forget();
            let group = state.open_group;
            let slot = SnapshotSlot {
                version: snapshot.version,
                location,
            };
            self.shared.enqueue_waiter(
                state,
                Waiter {
                    group,
                    permits,
                    reply: Reply::Snapshot(sender, stream.clone(), slot),
                },
            );
        }
        receiver.await.unwrap_or_else(|_| {
            Err(SnapshotError::Unavailable(
                "the log's flusher stopped before answering".into(),
            ))
        })
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, ReadError> {
        let (slot, segments) = {
            let state = self.shared.lock();
            match state.snapshots.get(stream) {
                None => return Ok(None),
                Some(slot) => (*slot, state.segments.clone()),
            }
        };
        let record = self.read_record(&segments, slot.location, format::decode_snapshot)?;
        Ok(Some(record.snapshot))
    }
}

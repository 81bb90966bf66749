//! Checkpointed read models (DESIGN §2.7).
//!
//! A [`Projection`] is a pure fold over the store's events into keyed records — a map from
//! [`Projection::Key`] to [`Projection::Value`], where each event changes at most one
//! record. A [`ProjectionRunner`] feeds it from its checkpoint and saves to the stream
//! `projection-<name>` only the records that changed since its last save, then one
//! checkpoint event naming where those records start: a save costs what changed, and no
//! event grows with the number of records (a board of 100,000 stations saves as easily as
//! one of ten).
//!
//! **State and checkpoint together.** A save may take several appends (records are
//! chunked to the store's limits); its checkpoint event comes last. Loading applies a
//! save's records only when the checkpoint that names them follows, so records a crash
//! left without their checkpoint are ignored, and the loaded state is exactly the fold of
//! the events up to the loaded checkpoint — never ahead, never behind (the failure seed
//! 002 warns of, and N6 reproduces on purpose). Saves use the stream's expected version,
//! so two runners of one stream cannot both save over each other unnoticed.
//!
//! **Bounded loads.** Once the records written since the last *base* pass twice the live
//! records (and [`BASE_RECORDS_MIN`]), the next save writes every live record — a new base
//! — and every checkpoint says where the latest base starts, so a load reads from there:
//! its cost follows the size of the read model, not the length of its history.
//!
//! [`rebuild`] folds from position 0; after quiescence it equals the live state (I7).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::core::limits::Limits;
use crate::core::types::{
    CurrentVersion, EventData, EventId, ExpectedVersion, GlobalPosition, Metadata, RecordedEvent,
    StreamId, StreamVersion, hash128,
};
use crate::store::{AppendError, EventStore, ReadError};

/// Stream names of this prefix hold projection saves; projections never read them.
pub const PROJECTION_STREAM_PREFIX: &str = "projection-";

/// Records written since the last base before a save may write a new one (see the module
/// documentation): small read models do not rewrite themselves on every save.
pub const BASE_RECORDS_MIN: u64 = 1_024;

/// Event type of one saved record.
const RECORD_TYPE: &str = "ProjectionRecord";
/// Event type of a save's checkpoint.
const CHECKPOINT_TYPE: &str = "ProjectionCheckpoint";
/// A save's records per append, and their bytes at most (within the default limits).
const CHUNK_EVENTS_MAX: usize = 512;
const CHUNK_BYTES_MAX: usize = 512 * 1024;
/// Save-stream events read per page when looking back for the last checkpoint.
const LOOK_BACK_PAGE: u64 = 256;
/// Attempts of one save append whose outcome stayed unknown (the retry has the same
/// ids, so one that had landed is recognised, not doubled).
const UNKNOWN_OUTCOME_ATTEMPTS: u32 = 3;

/// A read model: a pure fold over recorded events into keyed records.
pub trait Projection {
    type Key: Ord + Clone + Serialize + DeserializeOwned + std::fmt::Debug;
    type Value: Clone + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug;
    /// Names the save stream; change it (or [`Projection::SCHEMA`]) when the records change.
    const NAME: &'static str;
    const SCHEMA: u32;

    /// The record `event` changes, if any.
    fn key(event: &RecordedEvent) -> Option<Self::Key>;
    /// Applies `event` to its record (`None` when there is none yet; leave `None` to
    /// remove it).
    fn apply(record: &mut Option<Self::Value>, event: &RecordedEvent);

    /// Folds `event` into `state`; returns the key it changed.
    fn fold(state: &mut ProjectionState<Self>, event: &RecordedEvent) -> Option<Self::Key> {
        let key = Self::key(event)?;
        let mut record = state.remove(&key);
        Self::apply(&mut record, event);
        if let Some(value) = record {
            state.insert(key.clone(), value);
        }
        Some(key)
    }
}

/// A projection's records.
pub type ProjectionState<P> = BTreeMap<<P as Projection>::Key, <P as Projection>::Value>;

/// Why a projection could not load, catch up or save.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("saved state of projection {name} does not decode: {reason}")]
    Corrupt { name: &'static str, reason: String },
    /// The instance of [`ProjectionRunner::load_instance`] cannot be part of a stream id.
    #[error("projection {name} cannot save as instance {instance:?}: {reason}")]
    InstanceName {
        name: &'static str,
        instance: String,
        reason: String,
    },
}

/// One saved record; `value: None` says the record was removed.
#[derive(Serialize, serde::Deserialize)]
struct SavedRecord<K, V> {
    key: K,
    value: Option<V>,
}

/// A saved record of projection `P`.
type Saved<P> = SavedRecord<<P as Projection>::Key, <P as Projection>::Value>;

/// The last event of a save.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize)]
struct SavedCheckpoint {
    schema: u32,
    checkpoint: Option<u64>,
    /// The save stream version of this save's first record (its own version if none).
    records_from: u64,
    /// Where the latest base (a save of every live record) starts.
    base_from: u64,
}

/// Runs one projection against one store.
#[derive(Debug)]
pub struct ProjectionRunner<S, P: Projection> {
    store: S,
    state: ProjectionState<P>,
    /// Records changed since the last save.
    dirty: BTreeSet<P::Key>,
    checkpoint: Option<GlobalPosition>,
    /// The checkpoint of the last save (or load): a save with nothing new is skipped.
    saved_checkpoint: Option<GlobalPosition>,
    save_stream: StreamId,
    save_version: CurrentVersion,
    /// Where the latest base starts; `None` until one is saved (the next save is one).
    base_from: Option<u64>,
    /// Records saved since that base.
    records_since_base: u64,
    /// An append of the last save ended with its outcome unknown: it may have landed, so
    /// the next save starts from the stream's version as read then (what landed without
    /// its checkpoint is ignored on load; a checkpoint that landed names its records).
    resync: bool,
}

impl<S: EventStore, P: Projection> ProjectionRunner<S, P> {
    /// Loads the last save (state + checkpoint), or starts from scratch.
    pub async fn load(store: S) -> Result<ProjectionRunner<S, P>, ProjectionError> {
        let save_stream = StreamId::new(&format!("{PROJECTION_STREAM_PREFIX}{}", P::NAME))
            .expect("projection names are valid stream ids");
        ProjectionRunner::load_from(store, save_stream).await
    }

    /// [`load`](Self::load) for one of several copies of the projection over one store —
    /// one per CSMS node — each saving to a stream of its own
    /// (`projection-<name>-<instance>`): copies that shared one would refuse each other's
    /// saves forever (each expects the version it last wrote). Fails if `instance` cannot
    /// be part of a stream id.
    pub async fn load_instance(
        store: S,
        instance: &str,
    ) -> Result<ProjectionRunner<S, P>, ProjectionError> {
        let name = format!("{PROJECTION_STREAM_PREFIX}{}-{instance}", P::NAME);
        let save_stream = StreamId::new(&name).map_err(|e| ProjectionError::InstanceName {
            name: P::NAME,
            instance: instance.to_owned(),
            reason: e.to_string(),
        })?;
        ProjectionRunner::load_from(store, save_stream).await
    }

    async fn load_from(
        store: S,
        save_stream: StreamId,
    ) -> Result<ProjectionRunner<S, P>, ProjectionError> {
        let save_version = store.current_version(&save_stream).await?;
        let mut runner = ProjectionRunner {
            store,
            state: BTreeMap::new(),
            dirty: BTreeSet::new(),
            checkpoint: None,
            saved_checkpoint: None,
            save_stream,
            save_version,
            base_from: None,
            records_since_base: 0,
            resync: false,
        };
        let CurrentVersion::Current(last) = save_version else {
            return Ok(runner);
        };
        let Some((at, saved)) = runner.last_checkpoint(last).await? else {
            return Ok(runner);
        };
        // A save of another schema is ignored: rebuild from scratch instead of misreading.
        if saved.schema != P::SCHEMA {
            return Ok(runner);
        }
        runner.replay_saves(saved.base_from, at).await?;
        runner.checkpoint = saved.checkpoint.map(GlobalPosition);
        runner.saved_checkpoint = runner.checkpoint;
        runner.base_from = Some(saved.base_from);
        Ok(runner)
    }

    /// The last checkpoint event at or before version `last`, looking back page by page
    /// past the records of a save a crash left unfinished.
    async fn last_checkpoint(
        &self,
        last: StreamVersion,
    ) -> Result<Option<(u64, SavedCheckpoint)>, ProjectionError> {
        let mut end = last.0 + 1;
        while end > 0 {
            let from = end.saturating_sub(LOOK_BACK_PAGE);
            let page = self
                .store
                .read_stream(
                    &self.save_stream,
                    StreamVersion(from),
                    (end - from) as usize,
                )
                .await?;
            // Saves of this format come after any other event on the stream (a save of an
            // earlier format, say): meeting one first means there is no checkpoint to load,
            // and the scan stops there instead of reading an old history.
            for event in page.iter().rev() {
                match event.event_type.as_str() {
                    CHECKPOINT_TYPE => {
                        return Ok(Some((event.version.0, decode(&event.payload)?)));
                    }
                    RECORD_TYPE => {}
                    _ => return Ok(None),
                }
            }
            end = from;
        }
        Ok(None)
    }

    /// Applies the saves from version `from` up to the checkpoint at version `to`: each
    /// save's records count once its checkpoint is read, and only from where it says they
    /// start (records before that are a crashed save's).
    async fn replay_saves(&mut self, from: u64, to: u64) -> Result<(), ProjectionError> {
        let page_max = Limits::default().read_events_max as u64;
        // Records read, with their versions, waiting for the checkpoint that names them.
        let mut pending: Vec<(u64, Saved<P>)> = Vec::new();
        let mut next = from;
        while next <= to {
            let count = (to + 1 - next).min(page_max) as usize;
            let page = self
                .store
                .read_stream(&self.save_stream, StreamVersion(next), count)
                .await?;
            let Some(last) = page.last() else { break };
            next = last.version.0 + 1;
            for event in page {
                match event.event_type.as_str() {
                    RECORD_TYPE => pending.push((event.version.0, decode(&event.payload)?)),
                    CHECKPOINT_TYPE => {
                        let saved: SavedCheckpoint = decode(&event.payload)?;
                        for (version, record) in pending.drain(..) {
                            if version >= saved.records_from {
                                self.records_since_base += 1;
                                match record.value {
                                    Some(value) => self.state.insert(record.key, value),
                                    None => self.state.remove(&record.key),
                                };
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn state(&self) -> &ProjectionState<P> {
        &self.state
    }

    pub fn checkpoint(&self) -> Option<GlobalPosition> {
        self.checkpoint
    }

    /// The save stream version where the latest base starts (what a load reads from).
    pub fn base_version(&self) -> Option<u64> {
        self.base_from
    }

    /// Records changed since the last save: what the next save writes (unless it writes
    /// a base).
    pub fn unsaved_records(&self) -> usize {
        self.dirty.len()
    }

    /// Applies every event after the checkpoint, up to the end of what is readable now;
    /// returns how many were applied.
    pub async fn catch_up(&mut self) -> Result<u64, ProjectionError> {
        let page_max = Limits::default().read_events_max;
        let mut applied = 0;
        loop {
            let from = self
                .checkpoint
                .map_or(GlobalPosition::FIRST, GlobalPosition::next);
            let page = self.store.read_all(from, page_max).await?;
            for event in &page {
                self.apply(event);
                applied += 1;
            }
            // A short page reached what was readable then: reading again at once would
            // only return an empty page (a wasted round trip per wake on a remote store).
            if page.len() < page_max {
                return Ok(applied);
            }
        }
    }

    /// Applies one event (which must be the next one) — for runners fed by a subscription.
    pub fn apply(&mut self, event: &RecordedEvent) {
        assert!(
            self.checkpoint.is_none_or(|c| event.position > c),
            "events applied in order, once"
        );
        if !event.stream.as_str().starts_with(PROJECTION_STREAM_PREFIX)
            && let Some(key) = P::fold(&mut self.state, event)
        {
            self.dirty.insert(key);
        }
        self.checkpoint = Some(event.position);
    }

    /// Saves the records changed since the last save (or, when due, every record: a new
    /// base), then the checkpoint that makes them count. Fails with `WrongExpectedVersion`
    /// if another runner saved to the stream in between.
    pub async fn save(&mut self, recorded_at_millis: u64) -> Result<(), ProjectionError> {
        if self.resync {
            self.save_version = self.store.current_version(&self.save_stream).await?;
            self.resync = false;
        }
        let base = self.base_from.is_none()
            || self.records_since_base > BASE_RECORDS_MIN.max(2 * self.state.len() as u64);
        if !base && self.dirty.is_empty() && self.saved_checkpoint == self.checkpoint {
            return Ok(());
        }
        let keys: Vec<P::Key> = if base {
            self.state.keys().cloned().collect()
        } else {
            self.dirty.iter().cloned().collect()
        };
        let records_from = self.save_version.next_version().0;
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        for key in &keys {
            let record = SavedRecord {
                key,
                value: self.state.get(key),
            };
            let payload = serde_json::to_vec(&record).expect("projection records serialise");
            if !chunk.is_empty()
                && (chunk.len() == CHUNK_EVENTS_MAX
                    || chunk_bytes + payload.len() > CHUNK_BYTES_MAX)
            {
                self.append_save(std::mem::take(&mut chunk)).await?;
                chunk_bytes = 0;
            }
            chunk_bytes += payload.len();
            chunk.push(self.saved_event(RECORD_TYPE, payload, recorded_at_millis, chunk.len()));
        }
        if !chunk.is_empty() {
            self.append_save(chunk).await?;
        }
        let saved = SavedCheckpoint {
            schema: P::SCHEMA,
            checkpoint: self.checkpoint.map(|c| c.0),
            records_from,
            base_from: if base {
                records_from
            } else {
                self.base_from.expect("a base was saved")
            },
        };
        let payload = serde_json::to_vec(&saved).expect("checkpoints serialise");
        let event = self.saved_event(CHECKPOINT_TYPE, payload, recorded_at_millis, 0);
        self.append_save(vec![event]).await?;
        self.dirty.clear();
        self.saved_checkpoint = self.checkpoint;
        if base {
            self.base_from = Some(records_from);
            self.records_since_base = keys.len() as u64;
        } else {
            self.records_since_base += keys.len() as u64;
        }
        Ok(())
    }

    /// An event of the save stream, the `index`-th of the next append. Its id covers
    /// the stream, the version it lands at and its content: appending it again at the
    /// same place is an idempotent retry; another runner's different content there is a
    /// conflict, never a silent no-op.
    fn saved_event(
        &self,
        event_type: &str,
        payload: Vec<u8>,
        recorded_at_millis: u64,
        index: usize,
    ) -> EventData {
        let version = self.save_version.next_version().0 + index as u64;
        let key = format!(
            "{}\u{1f}{version}\u{1f}{:032x}",
            self.save_stream,
            hash128(&payload)
        );
        EventData {
            id: EventId(hash128(key.as_bytes())),
            event_type: event_type.into(),
            tags: Vec::new(),
            metadata: Metadata {
                recorded_at_millis,
                ..Metadata::default()
            },
            payload,
        }
    }

    /// Appends `events` at the save stream's next version; an unknown outcome is settled
    /// by appending the same events again.
    async fn append_save(&mut self, events: Vec<EventData>) -> Result<(), ProjectionError> {
        let expected = match self.save_version {
            CurrentVersion::NoStream => ExpectedVersion::NoStream,
            CurrentVersion::Current(version) => ExpectedVersion::Exact(version),
        };
        let mut attempt = 1;
        loop {
            match self
                .store
                .append(&self.save_stream, expected, events.clone())
                .await
            {
                Ok(result) => {
                    self.save_version = CurrentVersion::Current(result.last_version);
                    return Ok(());
                }
                Err(AppendError::OutcomeUnknown(_)) if attempt < UNKNOWN_OUTCOME_ATTEMPTS => {
                    attempt += 1;
                }
                Err(error) => {
                    self.resync = matches!(error, AppendError::OutcomeUnknown(_));
                    return Err(error.into());
                }
            }
        }
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProjectionError> {
    serde_json::from_slice(payload).map_err(|e| ProjectionError::Corrupt {
        name: "projection save",
        reason: e.to_string(),
    })
}

/// The projection's state folded from position 0 (what a live runner must equal).
pub async fn rebuild<S: EventStore, P: Projection>(
    store: &S,
) -> Result<ProjectionState<P>, ProjectionError> {
    let mut state = BTreeMap::new();
    let mut from = GlobalPosition::FIRST;
    loop {
        let page = store
            .read_all(from, Limits::default().read_events_max)
            .await?;
        let Some(last) = page.last() else {
            return Ok(state);
        };
        from = last.position.next();
        for event in page
            .iter()
            .filter(|e| !e.stream.as_str().starts_with(PROJECTION_STREAM_PREFIX))
        {
            P::fold(&mut state, event);
        }
    }
}

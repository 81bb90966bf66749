//! Checkpointed read models (DESIGN §2.7).
//!
//! A [`Projection`] is a pure fold over the store's events. A [`ProjectionRunner`] feeds it
//! from its checkpoint and saves **state and checkpoint together** as one event in the
//! stream `projection-<name>`: one append is one atomic record, so after any crash the
//! saved state is exactly the fold of the events up to the saved checkpoint — never
//! ahead, never behind (the failure seed 002 warns of, and N6 reproduces on purpose).
//! Saves use the stream's expected version, so two runners of one projection cannot both
//! save over each other unnoticed. [`rebuild`] folds from position 0; after quiescence it
//! equals the live state (I7).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::core::limits::Limits;
use crate::core::types::{
    CurrentVersion, EventData, EventId, ExpectedVersion, GlobalPosition, Metadata, RecordedEvent,
    StreamId, hash128,
};
use crate::store::{AppendError, EventStore, ReadError};

/// Stream names of this prefix hold projection saves; projections never read them.
pub const PROJECTION_STREAM_PREFIX: &str = "projection-";

/// A read model: a pure fold over recorded events.
pub trait Projection {
    type State: Clone + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug;
    /// Names the save stream; change it (or [`Projection::SCHEMA`]) when the state changes.
    const NAME: &'static str;
    const SCHEMA: u32;

    fn initial() -> Self::State;
    fn apply(state: &mut Self::State, event: &RecordedEvent);
}

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

#[derive(Serialize, serde::Deserialize)]
struct Saved<T> {
    schema: u32,
    checkpoint: Option<u64>,
    state: T,
}

/// Runs one projection against one store.
#[derive(Debug)]
pub struct ProjectionRunner<S, P: Projection> {
    store: S,
    state: P::State,
    checkpoint: Option<GlobalPosition>,
    save_stream: StreamId,
    save_version: CurrentVersion,
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
            state: P::initial(),
            checkpoint: None,
            save_stream,
            save_version,
        };
        if let CurrentVersion::Current(last) = save_version {
            let saved = runner
                .store
                .read_stream(&runner.save_stream, last, 1)
                .await?;
            let event = saved.first().expect("the stream's last version exists");
            let decoded: Saved<P::State> =
                serde_json::from_slice(&event.payload).map_err(|e| ProjectionError::Corrupt {
                    name: P::NAME,
                    reason: e.to_string(),
                })?;
            // A save of another schema is ignored: rebuild from scratch instead of misreading.
            if decoded.schema == P::SCHEMA {
                runner.state = decoded.state;
                runner.checkpoint = decoded.checkpoint.map(GlobalPosition);
            }
        }
        Ok(runner)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn state(&self) -> &P::State {
        &self.state
    }

    pub fn checkpoint(&self) -> Option<GlobalPosition> {
        self.checkpoint
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
        if !event.stream.as_str().starts_with(PROJECTION_STREAM_PREFIX) {
            P::apply(&mut self.state, event);
        }
        self.checkpoint = Some(event.position);
    }

    /// Saves state and checkpoint in one append. Fails with `WrongExpectedVersion` if
    /// another runner saved in between.
    pub async fn save(&mut self, recorded_at_millis: u64) -> Result<(), ProjectionError> {
        let saved = Saved {
            schema: P::SCHEMA,
            checkpoint: self.checkpoint.map(|c| c.0),
            state: self.state.clone(),
        };
        let payload = serde_json::to_vec(&saved).expect("projection state serialises");
        let expected = match self.save_version {
            CurrentVersion::NoStream => ExpectedVersion::NoStream,
            CurrentVersion::Current(version) => ExpectedVersion::Exact(version),
        };
        let next_version = self.save_version.next_version();
        // The id covers the content: re-saving the same state at the same place is an
        // idempotent retry; another runner's different state is a conflict, never a
        // silent no-op.
        let key = format!(
            "{}\u{1f}{}\u{1f}{:032x}",
            self.save_stream,
            next_version.0,
            hash128(&payload)
        );
        let data = EventData {
            id: EventId(hash128(key.as_bytes())),
            event_type: "ProjectionSaved".into(),
            tags: Vec::new(),
            metadata: Metadata {
                recorded_at_millis,
                ..Metadata::default()
            },
            payload,
        };
        let result = self
            .store
            .append(&self.save_stream, expected, vec![data])
            .await?;
        self.save_version = CurrentVersion::Current(result.last_version);
        Ok(())
    }
}

/// The projection's state folded from position 0 (what a live runner must equal).
pub async fn rebuild<S: EventStore, P: Projection>(store: &S) -> Result<P::State, ProjectionError> {
    let mut state = P::initial();
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
            P::apply(&mut state, event);
        }
    }
}

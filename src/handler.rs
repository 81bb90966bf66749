//! The command handler: load (snapshot + tail) → decide → append with `Exact(version)` →
//! on conflict reload and decide again, with bounded, jittered backoff.
//!
//! Idempotency (I8): the events of command `c` get ids `EventId::derive(c, 0..)`. Before
//! deciding, the handler looks for the first of them; if it is stored, the command already
//! took effect and is not applied again. Two racing submissions of one command produce
//! the same ids, and the store refuses to store an id twice — so at most one takes effect.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::types::{
    AppendCondition, AppendResult, CommandId, CurrentVersion, EventData, EventId, EventView,
    ExpectedVersion, GlobalPosition, Metadata, Snapshot, StreamId,
};
use crate::decider::{Aggregate, CodecError, Decider};
use crate::environment::Environment;
use crate::store::{AppendError, EventStore, ReadError};

/// Bounds of the retry loop and the snapshot cadence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerConfig {
    /// Load–decide–append attempts before giving up on conflicts.
    pub attempts_max: u32,
    /// Backoff before the second attempt; doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Save a snapshot whenever a stream's length crosses a multiple of this (0: never).
    pub snapshot_every_events: u64,
    /// States of this many recently used streams are kept in memory, so a command on a
    /// hot stream reads only the events since (0: always load from the store).
    pub state_cache_streams: usize,
}

impl Default for HandlerConfig {
    fn default() -> HandlerConfig {
        HandlerConfig {
            attempts_max: 16,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(100),
            snapshot_every_events: 1000,
            state_cache_streams: 1024,
        }
    }
}

/// What a handled command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command's events were appended now.
    Applied { result: AppendResult, attempts: u32 },
    /// The command had already taken effect (a retry or resubmission); nothing new stored.
    AlreadyApplied { position: GlobalPosition },
    /// The decider produced no events: the state already satisfies the command.
    Unchanged { version: CurrentVersion },
}

/// Why a command did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError<R> {
    /// The decider refused the command.
    #[error("command rejected: {0:?}")]
    Rejected(R),
    /// The command id was used before for a command on another stream.
    #[error("command id {command} already took effect on stream {other_stream}")]
    CommandIdReused {
        command: CommandId,
        other_stream: StreamId,
    },
    /// Every attempt met a concurrent writer.
    #[error("gave up after {attempts} attempts: {last}")]
    Contention { attempts: u32, last: AppendError },
    #[error(transparent)]
    Append(AppendError),
    #[error(transparent)]
    Read(ReadError),
    #[error(transparent)]
    Codec(CodecError),
}

/// A loaded aggregate: its state and the version it reflects.
#[derive(Clone, Debug)]
pub struct Loaded<S> {
    pub state: S,
    pub version: CurrentVersion,
    /// Events replayed on top of the snapshot (or from the start).
    pub replayed_events: u64,
    pub from_snapshot: bool,
}

/// Where a replay starts: a snapshot, a cached state, or the beginning.
struct Start<T> {
    state: T,
    version: CurrentVersion,
    from_snapshot: bool,
}

/// A fold in progress: the state so far, the version it reflects, and the first event
/// that did not decode (which stops the fold).
struct Replay<S> {
    state: S,
    version: CurrentVersion,
    failure: Option<CodecError>,
}

impl<S> Replay<S> {
    #[inline(always)]
    fn apply<A: Aggregate<State = S>>(&mut self, event: EventView<'_>) -> ControlFlow<()> {
        assert_eq!(
            event.version,
            self.version.next_version(),
            "stream read skipped a version"
        );
        match A::decode_event(event.event_type, event.payload) {
            Ok(decoded) => {
                A::evolve_in_place(&mut self.state, &decoded);
                self.version = CurrentVersion::Current(event.version);
                ControlFlow::Continue(())
            }
            Err(error) => {
                self.failure = Some(error);
                ControlFlow::Break(())
            }
        }
    }
}

/// Recently used stream states, each at the durable version it reflects. A stream never
/// changes below its version, so an entry is never stale, only behind: the handler reads
/// what came after it. A command borrows its stream's state (`take`) and returns it,
/// evolved or not (`put`), so no state is ever copied; a concurrent command on the same
/// stream meanwhile loads from the store. Ordered maps keep eviction deterministic.
#[derive(Debug)]
struct StateCache<T> {
    entries: BTreeMap<StreamId, (CurrentVersion, T, u64)>,
    uses: u64,
}

impl<T> StateCache<T> {
    fn take(&mut self, stream: &StreamId) -> Option<(CurrentVersion, T)> {
        self.entries
            .remove(stream)
            .map(|(version, state, _)| (version, state))
    }

    fn put(&mut self, stream: &StreamId, version: CurrentVersion, state: T, capacity: usize) {
        if capacity == 0 {
            return;
        }
        self.uses += 1;
        let newer =
            |entry: &(CurrentVersion, T, u64)| entry.0.next_version() >= version.next_version();
        if self.entries.get(stream).is_some_and(newer) {
            return;
        }
        self.entries
            .insert(stream.clone(), (version, state, self.uses));
        while self.entries.len() > capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(stream, _)| stream.clone())
                .expect("not empty");
            self.entries.remove(&oldest);
        }
    }
}

/// Handles commands for one aggregate type over one store. Cheap to clone; clones share
/// the state cache.
#[derive(Debug)]
pub struct CommandHandler<S, A: Decider> {
    store: S,
    config: HandlerConfig,
    cache: Arc<Mutex<StateCache<A::State>>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<S: Clone, A: Decider> Clone for CommandHandler<S, A> {
    fn clone(&self) -> Self {
        CommandHandler {
            store: self.store.clone(),
            config: self.config.clone(),
            cache: self.cache.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<S: EventStore, A: Aggregate> CommandHandler<S, A>
where
    A::Command: Sync,
    A::State: Send,
    A::Event: Send,
    A::Rejection: Send,
{
    pub fn new(store: S, config: HandlerConfig) -> CommandHandler<S, A> {
        CommandHandler {
            store,
            config,
            cache: Arc::new(Mutex::new(StateCache {
                entries: BTreeMap::new(),
                uses: 0,
            })),
            aggregate: PhantomData,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, StateCache<A::State>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles `command` (identified by `command_id`) on `stream`.
    pub async fn handle<E: Environment>(
        &self,
        env: &mut E,
        stream: &StreamId,
        command_id: CommandId,
        command: &A::Command,
    ) -> Result<Outcome, HandleError<A::Rejection>> {
        self.handle_if(env, stream, command_id, command, None).await
    }

    /// [`handle`](Self::handle), with the append also conditioned on `condition` (checked
    /// by the store atomically with the expected version). A failed condition is not
    /// retried: it is returned as `HandleError::Append(AppendError::ConditionFailed)`.
    /// The node fences what it records for a station this way: the condition fails once
    /// another node has taken the station's dispatch lease.
    pub async fn handle_if<E: Environment>(
        &self,
        env: &mut E,
        stream: &StreamId,
        command_id: CommandId,
        command: &A::Command,
        condition: Option<&AppendCondition>,
    ) -> Result<Outcome, HandleError<A::Rejection>> {
        let mut last_conflict = None;
        for attempt in 1..=self.config.attempts_max {
            if attempt > 1 {
                tokio::time::sleep(self.backoff(attempt, env)).await;
            }
            if let Some(position) = self.already_applied(stream, command_id).await? {
                return Ok(Outcome::AlreadyApplied { position });
            }
            let loaded = self.load_recent(stream).await?;
            let events = match A::decide(&loaded.state, command) {
                Ok(events) if !events.is_empty() => events,
                decided => {
                    let version = loaded.version;
                    self.remember(stream, loaded.version, loaded.state);
                    return match decided {
                        Err(rejection) => Err(HandleError::Rejected(rejection)),
                        Ok(_) => Ok(Outcome::Unchanged { version }),
                    };
                }
            };
            let data = encode_events::<A>(&events, command_id, env.now_millis());
            // The subject names the stream and the command, so that the simulator can
            // pick commands that lose the race on every attempt (built only there).
            #[cfg(madsim)]
            crate::faultpoint::reach(
                crate::faultpoint::FaultPoint::CommandDecided,
                &format!("{} {command_id}", stream.as_str()),
            )
            .await;
            let expected = match loaded.version {
                CurrentVersion::NoStream => ExpectedVersion::NoStream,
                CurrentVersion::Current(version) => ExpectedVersion::Exact(version),
            };
            match self
                .store
                .append_if(stream, expected, data, condition)
                .await
            {
                Ok(result) if !result.written => {
                    // A concurrent submission of this very command stored these events.
                    self.remember(stream, loaded.version, loaded.state);
                    return Ok(Outcome::AlreadyApplied {
                        position: result.first_position,
                    });
                }
                Ok(result) => {
                    let before = loaded.version;
                    let state = events.iter().fold(loaded.state, A::evolve);
                    self.maybe_snapshot(stream, before, &state, result).await;
                    let after = CurrentVersion::Current(result.last_version);
                    self.remember(stream, after, state);
                    return Ok(Outcome::Applied {
                        result,
                        attempts: attempt,
                    });
                }
                Err(
                    error @ (AppendError::WrongExpectedVersion { .. }
                    | AppendError::DuplicateEventId { .. }
                    | AppendError::OutcomeUnknown(_)),
                ) => {
                    // Behind now, but still true at its version: the retry reads the rest.
                    self.remember(stream, loaded.version, loaded.state);
                    last_conflict = Some(error);
                }
                Err(error) => return Err(HandleError::Append(error)),
            }
        }
        Err(HandleError::Contention {
            attempts: self.config.attempts_max,
            last: last_conflict.expect("at least one attempt failed"),
        })
    }

    /// `Some(position)` when `command_id` already produced events on `stream`.
    async fn already_applied(
        &self,
        stream: &StreamId,
        command_id: CommandId,
    ) -> Result<Option<GlobalPosition>, HandleError<A::Rejection>> {
        let first_id = EventId::derive(command_id, 0);
        match self
            .store
            .find_event(first_id)
            .await
            .map_err(HandleError::Read)?
        {
            None => Ok(None),
            Some(event) if event.stream == *stream => Ok(Some(event.position)),
            Some(event) => Err(HandleError::CommandIdReused {
                command: command_id,
                other_stream: event.stream,
            }),
        }
    }

    /// Rehydrates `stream`: the latest snapshot of the current schema, then the tail.
    /// Loads `stream` from the store alone: its latest snapshot (if its schema is
    /// current) plus the events after it.
    pub async fn load(
        &self,
        stream: &StreamId,
    ) -> Result<Loaded<A::State>, HandleError<A::Rejection>> {
        let start = self.load_snapshot(stream).await?;
        self.replay_after(stream, start).await
    }

    /// Loads `stream` from its cached state when there is one (taking it out of the cache
    /// until [`remember`](Self::remember) puts it back), else as [`load`](Self::load).
    async fn load_recent(
        &self,
        stream: &StreamId,
    ) -> Result<Loaded<A::State>, HandleError<A::Rejection>> {
        let cached = self.cache().take(stream);
        let start = match cached {
            Some((version, state)) => Start {
                state,
                version,
                from_snapshot: false,
            },
            None => self.load_snapshot(stream).await?,
        };
        self.replay_after(stream, start).await
    }

    /// Puts a state the store has made durable (back) into the cache.
    fn remember(&self, stream: &StreamId, version: CurrentVersion, state: A::State) {
        self.cache()
            .put(stream, version, state, self.config.state_cache_streams);
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
    ) -> Result<Start<A::State>, HandleError<A::Rejection>> {
        let snapshot = self
            .store
            .load_snapshot(stream)
            .await
            .map_err(HandleError::Read)?
            .filter(|s| s.schema_version == A::SNAPSHOT_SCHEMA)
            .and_then(|s| {
                A::decode_state(&s.state)
                    .ok()
                    .map(|state| (s.version, state))
            });
        Ok(match snapshot {
            Some((version, state)) => Start {
                state,
                version: CurrentVersion::Current(version),
                from_snapshot: true,
            },
            None => Start {
                state: A::initial(),
                version: CurrentVersion::NoStream,
                from_snapshot: false,
            },
        })
    }

    /// Replays the events of `stream` after `start`, borrowing each from the store
    /// ([`EventStore::visit_stream`]): the state is folded as the events are read.
    async fn replay_after(
        &self,
        stream: &StreamId,
        start: Start<A::State>,
    ) -> Result<Loaded<A::State>, HandleError<A::Rejection>> {
        let Start {
            state,
            version,
            from_snapshot,
        } = start;
        let mut replay = Replay {
            state,
            version,
            failure: None,
        };
        let visited = self
            .store
            .visit_stream(stream, version.next_version(), |event| {
                replay.apply::<A>(event)
            })
            .await;
        let replayed_events = match visited {
            Ok(count) => count,
            Err(ReadError::StreamNotFound(_)) => 0,
            Err(error) => return Err(HandleError::Read(error)),
        };
        // A visit that stopped at an event that did not decode counted that event too.
        if let Some(error) = replay.failure {
            return Err(HandleError::Codec(error));
        }
        Ok(Loaded {
            state: replay.state,
            version: replay.version,
            replayed_events,
            from_snapshot,
        })
    }

    /// Saves `state` (the stream's state after `result`) when the append took the stream
    /// from `before` across a multiple of the snapshot cadence.
    async fn maybe_snapshot(
        &self,
        stream: &StreamId,
        before: CurrentVersion,
        state: &A::State,
        result: AppendResult,
    ) {
        let every = self.config.snapshot_every_events;
        let before = before.next_version().0;
        let after = result.last_version.0 + 1;
        if every == 0 || before / every == after / every {
            return;
        }
        let snapshot = Snapshot {
            version: result.last_version,
            schema_version: A::SNAPSHOT_SCHEMA,
            state: A::encode_state(state),
        };
        // A snapshot is an optimisation: the command's events are already durable, so a
        // failed save only means a longer replay next time.
        let _ = self.store.save_snapshot(stream, snapshot).await;
    }

    fn backoff<E: Environment>(&self, attempt: u32, env: &mut E) -> Duration {
        let doubling = 1u32 << (attempt - 2).min(16);
        let ceiling = self
            .config
            .backoff_base
            .saturating_mul(doubling)
            .min(self.config.backoff_max);
        let ceiling_micros = ceiling.as_micros().max(1) as u64;
        // "Equal jitter": half fixed, half random, so retries spread but never spin.
        Duration::from_micros(ceiling_micros / 2 + env.random_u64() % (ceiling_micros / 2 + 1))
    }
}

/// Encodes a command's events with ids derived from the command id.
pub fn encode_events<A: Aggregate>(
    events: &[A::Event],
    command_id: CommandId,
    recorded_at_millis: u64,
) -> Vec<EventData> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let encoded = A::encode_event(event);
            EventData {
                id: EventId::derive(command_id, index as u32),
                event_type: encoded.event_type,
                tags: encoded.tags,
                metadata: Metadata {
                    command_id: Some(command_id),
                    causation_id: None,
                    correlation_id: Some(command_id),
                    recorded_at_millis,
                },
                payload: encoded.payload,
            }
        })
        .collect()
}

//! The store's commit logic, as a pure data structure.
//!
//! [`StoreIndex`] knows, for every committed event, its stream, version, position, id, type
//! and tags — everything but the payload. Every backend keeps one and asks it to
//! [`check`](StoreIndex::check_append) an append before writing and to
//! [`apply`](StoreIndex::apply_append) it after; the models call the same functions. It does
//! no I/O, reads no clock and draws no random numbers.

use crate::core::hash::FoldHashMap;
use crate::core::limits::Limits;
use crate::core::types::{
    AppendCondition, AppendResult, CurrentVersion, EventData, EventId, ExpectedVersion,
    GlobalPosition, Query, StreamId, StreamVersion,
};
use crate::store::AppendError;

/// The expected-version rule on its own: does `expected` admit a stream in state `actual`?
pub fn expected_version_matches(expected: ExpectedVersion, actual: CurrentVersion) -> bool {
    match (expected, actual) {
        (ExpectedVersion::Any, _) => true,
        (ExpectedVersion::NoStream, CurrentVersion::NoStream) => true,
        (ExpectedVersion::NoStream, CurrentVersion::Current(_)) => false,
        (ExpectedVersion::StreamExists, CurrentVersion::NoStream) => false,
        (ExpectedVersion::StreamExists, CurrentVersion::Current(_)) => true,
        (ExpectedVersion::Exact(_), CurrentVersion::NoStream) => false,
        (ExpectedVersion::Exact(want), CurrentVersion::Current(have)) => want == have,
    }
}

/// An id that occurs twice among `events`, if any.
pub fn repeated_event_id(events: &[EventData]) -> Option<EventId> {
    if events.len() < 2 {
        return None;
    }
    // Ids in strictly increasing order (sequences, derived ids of one command in most
    // appends) cannot repeat: one pass, no allocation.
    if events.windows(2).all(|pair| pair[0].id < pair[1].id) {
        return None;
    }
    // Sorted, a repeated id sits next to itself: O(n log n), not a pairwise scan.
    let mut ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
}

/// Whether a retry of events stored from `first_version` on fits `expected`: the place an
/// append with that expectation would have put them.
pub fn retry_fits_expected(expected: ExpectedVersion, first_version: StreamVersion) -> bool {
    match expected {
        ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
        ExpectedVersion::NoStream => first_version == StreamVersion::FIRST,
        ExpectedVersion::Exact(version) => first_version == version.next(),
    }
}

/// What to do with an append that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendPlan {
    /// New events: write them, then [`StoreIndex::apply_append`].
    Write {
        first_version: StreamVersion,
        first_position: GlobalPosition,
    },
    /// Every event was already written by an identical earlier append: report its result
    /// and write nothing (an idempotent retry).
    AlreadyWritten(AppendResult),
}

/// Compact per-event facts, indexed by global position.
///
/// 40 bytes: the id as two words (a `u128` would align the entry to 16 and pad it to 48),
/// and the event's tags as the end of its run in the index's tag arena (the run starts
/// where the previous event's ends), instead of an allocation of its own per event.
#[derive(Clone, Debug)]
struct EventEntry {
    stream: u32,
    event_type: u32,
    version: StreamVersion,
    id: [u64; 2],
    tags_end: u64,
}

impl EventEntry {
    fn id(&self) -> EventId {
        EventId(u128::from(self.id[0]) | u128::from(self.id[1]) << 64)
    }
}

/// Where one event sits, as [`StoreIndex::locate`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLocation {
    pub stream: StreamId,
    pub version: StreamVersion,
    pub position: GlobalPosition,
}

/// Everything the index knows of one event: all of it but its metadata and payload.
#[derive(Clone, Copy, Debug)]
pub struct IndexedEvent<'a> {
    pub stream: &'a StreamId,
    pub version: StreamVersion,
    pub position: GlobalPosition,
    pub id: EventId,
    pub event_type: &'a str,
    index: &'a StoreIndex,
    tags: &'a [u32],
}

impl<'a> IndexedEvent<'a> {
    /// The event's tags, in the order it was appended with (a tag repeated there is kept).
    pub fn tags(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let symbols = &self.index.symbols;
        self.tags.iter().map(|&tag| symbols.name(tag))
    }
}

/// Interned strings: types and tags are stored once and compared as integers. Symbols are
/// dense (0, 1, 2, …), so per-symbol data lives in vectors indexed by symbol.
#[derive(Default, Debug, Clone)]
struct Symbols {
    /// Lookups only, never iterated.
    by_name: FoldHashMap<Box<str>, u32>,
    /// The name of each symbol, indexed by symbol.
    names: Vec<Box<str>>,
}

impl Symbols {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&symbol) = self.by_name.get(name) {
            return symbol;
        }
        let symbol = u32::try_from(self.names.len()).expect("fewer than 2^32 symbols");
        self.by_name.insert(name.into(), symbol);
        self.names.push(name.into());
        symbol
    }

    fn name(&self, symbol: u32) -> &str {
        &self.names[symbol as usize]
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }
}

/// Event id → position, in half the memory of a map keyed by the whole 128-bit id: keyed
/// by the id's low 64 bits, each hit checked against the full id in the event's index
/// entry. An id whose low half another id already has lives in a side map (ids are
/// random or derived, so it is almost always empty). Lookups only, never iterated: the
/// tables' order cannot leak into behaviour.
#[derive(Default, Debug, Clone)]
struct IdTable {
    by_low_half: FoldHashMap<u64, GlobalPosition>,
    collided: FoldHashMap<EventId, GlobalPosition>,
}

impl IdTable {
    fn low_half(id: EventId) -> u64 {
        id.0 as u64
    }

    fn get(&self, id: EventId, events: &[EventEntry]) -> Option<GlobalPosition> {
        let &position = self.by_low_half.get(&IdTable::low_half(id))?;
        if events[position.0 as usize].id() == id {
            return Some(position);
        }
        // Only an id whose low half was taken can be here.
        self.collided.get(&id).copied()
    }

    /// Indexes `id` at `position`; `events` holds every event indexed before it.
    fn insert(&mut self, id: EventId, position: GlobalPosition, events: &[EventEntry]) {
        match self.by_low_half.entry(IdTable::low_half(id)) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(position);
            }
            std::collections::hash_map::Entry::Occupied(slot) => {
                assert_ne!(
                    events[slot.get().0 as usize].id(),
                    id,
                    "event id {id} indexed twice"
                );
                let previous = self.collided.insert(id, position);
                assert!(previous.is_none(), "event id {id} indexed twice");
            }
        }
    }
}

/// The committed shape of a whole store. See the module documentation.
#[derive(Default, Debug, Clone)]
pub struct StoreIndex {
    limits: Limits,
    /// Lookups only, never iterated: its order cannot leak into behaviour.
    stream_keys: FoldHashMap<StreamId, u32>,
    stream_names: Vec<StreamId>,
    stream_positions: Vec<Vec<GlobalPosition>>,
    events: Vec<EventEntry>,
    /// Every event's tag symbols, event after event: event `i`'s run ends at its entry's
    /// `tags_end` and starts where event `i - 1`'s ends.
    tags: Vec<u32>,
    ids: IdTable,
    symbols: Symbols,
    /// Positions of the events of each type, indexed by the type's symbol.
    type_postings: Vec<Vec<GlobalPosition>>,
    /// Positions of the events carrying each tag, indexed by the tag's symbol.
    tag_postings: Vec<Vec<GlobalPosition>>,
}

impl StoreIndex {
    pub fn new(limits: Limits) -> StoreIndex {
        StoreIndex {
            limits,
            ..StoreIndex::default()
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of events in the store; the next event gets this position.
    pub fn event_count(&self) -> u64 {
        self.events.len() as u64
    }

    /// The current version of `stream`.
    pub fn current_version(&self, stream: &StreamId) -> CurrentVersion {
        match self.stream_keys.get(stream) {
            None => CurrentVersion::NoStream,
            Some(&key) => {
                let count = self.stream_positions[key as usize].len() as u64;
                debug_assert!(count > 0, "a known stream holds at least one event");
                CurrentVersion::Current(StreamVersion(count - 1))
            }
        }
    }

    /// Checks an append against limits, event-id idempotency, the expected version and the
    /// optional cross-stream condition, in that order. Changes nothing.
    pub fn check_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[EventData],
        condition: Option<&AppendCondition>,
    ) -> Result<AppendPlan, AppendError> {
        self.limits
            .check_append(events)
            .map_err(AppendError::LimitExceeded)?;
        if let Some(result) = self.check_idempotency(stream, expected, events)? {
            return Ok(AppendPlan::AlreadyWritten(result));
        }
        let actual = self.current_version(stream);
        if !expected_version_matches(expected, actual) {
            return Err(AppendError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        if let Some(condition) = condition
            && let Some(&position) = self
                .matching_positions(&condition.query, condition.after, 1)
                .first()
        {
            return Err(AppendError::ConditionFailed { position });
        }
        Ok(AppendPlan::Write {
            first_version: actual.next_version(),
            first_position: GlobalPosition(self.event_count()),
        })
    }

    /// `Some(result)` when all of `events` were already written together, in this stream, at
    /// a place `expected` admits; `None` when none of them exist; an error for anything in
    /// between (a partial overlap, or ids reused elsewhere).
    fn check_idempotency(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<Option<AppendResult>, AppendError> {
        if let Some(event_id) = repeated_event_id(events) {
            return Err(AppendError::DuplicateEventId {
                event_id,
                existing: None,
            });
        }
        let first_existing = match self.ids.get(events[0].id, &self.events) {
            None => {
                // The first is not stored: is any other?
                return match events[1..]
                    .iter()
                    .find_map(|e| self.ids.get(e.id, &self.events).map(|p| (e.id, p)))
                {
                    None => Ok(None),
                    Some((event_id, position)) => Err(AppendError::DuplicateEventId {
                        event_id,
                        existing: Some(position),
                    }),
                };
            }
            Some(position) => position,
        };
        let first_entry = &self.events[first_existing.0 as usize];
        let same_stream = self.stream_keys.get(stream) == Some(&first_entry.stream);
        let stream_positions = &self.stream_positions[first_entry.stream as usize];
        let first_version = first_entry.version;
        let contiguous = same_stream
            && events.iter().enumerate().all(|(offset, event)| {
                stream_positions
                    .get(first_version.0 as usize + offset)
                    .is_some_and(|p| self.events[p.0 as usize].id() == event.id)
            });
        if !(contiguous && retry_fits_expected(expected, first_version)) {
            return Err(AppendError::DuplicateEventId {
                event_id: events[0].id,
                existing: Some(first_existing),
            });
        }
        Ok(Some(AppendResult {
            first_version,
            last_version: StreamVersion(first_version.0 + events.len() as u64 - 1),
            first_position: first_existing,
            written: false,
        }))
    }

    /// Records an append that [`check_append`](Self::check_append) planned as
    /// [`AppendPlan::Write`]. Panics if the plan is stale: that is a bug in the caller.
    pub fn apply_append(
        &mut self,
        stream: &StreamId,
        events: &[EventData],
        plan_first_position: GlobalPosition,
    ) -> AppendResult {
        assert_eq!(
            plan_first_position.0,
            self.event_count(),
            "append applied out of order"
        );
        let key = self.stream_key_or_insert(stream);
        let first_version = StreamVersion(self.stream_positions[key as usize].len() as u64);
        // The events of one append mostly share a type: intern each run of a type once.
        let mut previous_type: Option<(&str, u32)> = None;
        for (offset, event) in events.iter().enumerate() {
            let position = GlobalPosition(self.event_count());
            let version = StreamVersion(first_version.0 + offset as u64);
            let event_type = match previous_type {
                Some((name, symbol)) if name == event.event_type => symbol,
                _ => self.symbols.intern(&event.event_type),
            };
            previous_type = Some((&event.event_type, event_type));
            self.insert_event(key, version, position, event_type, event);
        }
        AppendResult {
            first_version,
            last_version: StreamVersion(first_version.0 + events.len() as u64 - 1),
            first_position: plan_first_position,
            written: true,
        }
    }

    fn stream_key_or_insert(&mut self, stream: &StreamId) -> u32 {
        if let Some(&key) = self.stream_keys.get(stream) {
            return key;
        }
        let key = u32::try_from(self.stream_names.len()).expect("fewer than 2^32 streams");
        self.stream_keys.insert(stream.clone(), key);
        self.stream_names.push(stream.clone());
        self.stream_positions.push(Vec::new());
        key
    }

    fn insert_event(
        &mut self,
        stream: u32,
        version: StreamVersion,
        position: GlobalPosition,
        event_type: u32,
        event: &EventData,
    ) {
        let tags_start = self.tags.len();
        for tag in &event.tags {
            let symbol = self.symbols.intern(tag);
            self.tags.push(symbol);
        }
        postings_of(&mut self.type_postings, event_type).push(position);
        for index in tags_start..self.tags.len() {
            let postings = postings_of(&mut self.tag_postings, self.tags[index]);
            // A tag repeated on one event is indexed once.
            if postings.last() != Some(&position) {
                postings.push(position);
            }
        }
        self.ids.insert(event.id, position, &self.events);
        self.stream_positions[stream as usize].push(position);
        self.events.push(EventEntry {
            stream,
            event_type,
            version,
            id: [event.id.0 as u64, (event.id.0 >> 64) as u64],
            tags_end: self.tags.len() as u64,
        });
    }

    /// The tag symbols of the event at `index`, in the order it was appended with.
    fn tags_of(&self, index: usize) -> &[u32] {
        let start = match index {
            0 => 0,
            _ => self.events[index - 1].tags_end as usize,
        };
        &self.tags[start..self.events[index].tags_end as usize]
    }

    /// Positions of `stream`'s events from version `from`, at most `max` of them.
    pub fn stream_positions(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Option<&[GlobalPosition]> {
        let key = *self.stream_keys.get(stream)?;
        let positions = &self.stream_positions[key as usize];
        let start = (from.0 as usize).min(positions.len());
        let end = start.saturating_add(max).min(positions.len());
        Some(&positions[start..end])
    }

    /// Stream, version and position of the event at `position`.
    pub fn locate(&self, position: GlobalPosition) -> Option<EventLocation> {
        let entry = self.events.get(position.0 as usize)?;
        Some(EventLocation {
            stream: self.stream_names[entry.stream as usize].clone(),
            version: entry.version,
            position,
        })
    }

    /// What the index holds of the event at `position`.
    pub fn event(&self, position: GlobalPosition) -> Option<IndexedEvent<'_>> {
        let entry = self.events.get(position.0 as usize)?;
        Some(IndexedEvent {
            stream: &self.stream_names[entry.stream as usize],
            version: entry.version,
            position,
            id: entry.id(),
            event_type: self.symbols.name(entry.event_type),
            index: self,
            tags: self.tags_of(position.0 as usize),
        })
    }

    /// The position of the event with id `id`.
    pub fn position_of(&self, id: EventId) -> Option<GlobalPosition> {
        self.ids.get(id, &self.events)
    }

    /// Positions after `after` of events matching `query`, ascending, at most `max`.
    pub fn matching_positions(
        &self,
        query: &Query,
        after: Option<GlobalPosition>,
        max: usize,
    ) -> Vec<GlobalPosition> {
        let start = after.map_or(0, |p| p.0 + 1);
        let mut found: Vec<GlobalPosition> = Vec::new();
        for item in &query.items {
            let tag_symbols: Option<Vec<u32>> =
                item.tags.iter().map(|t| self.symbols.get(t)).collect();
            let Some(tag_symbols) = tag_symbols else {
                continue; // a tag never seen matches nothing
            };
            let type_symbols: Vec<u32> = item
                .event_types
                .iter()
                .filter_map(|t| self.symbols.get(t))
                .collect();
            if !item.event_types.is_empty() && type_symbols.is_empty() {
                continue;
            }
            let matches = |position: &GlobalPosition| {
                let entry = &self.events[position.0 as usize];
                let type_ok = type_symbols.is_empty() || type_symbols.contains(&entry.event_type);
                let tags = self.tags_of(position.0 as usize);
                type_ok && tag_symbols.iter().all(|t| tags.contains(t))
            };
            let candidates: Vec<&[GlobalPosition]> = match tag_symbols.first() {
                Some(first_tag) => vec![self.postings_from(&self.tag_postings, *first_tag, start)],
                None if !type_symbols.is_empty() => type_symbols
                    .iter()
                    .map(|t| self.postings_from(&self.type_postings, *t, start))
                    .collect(),
                None => {
                    found.extend((start..self.event_count()).take(max).map(GlobalPosition));
                    continue;
                }
            };
            for list in candidates {
                found.extend(list.iter().filter(|p| matches(p)).take(max));
            }
        }
        found.sort_unstable();
        found.dedup();
        found.truncate(max);
        found
    }

    fn postings_from<'a>(
        &self,
        postings: &'a [Vec<GlobalPosition>],
        symbol: u32,
        start: u64,
    ) -> &'a [GlobalPosition] {
        match postings.get(symbol as usize) {
            None => &[],
            Some(list) => {
                let from = list.partition_point(|p| p.0 < start);
                &list[from..]
            }
        }
    }
}

/// The postings list of `symbol`, growing `postings` to hold it.
fn postings_of(postings: &mut Vec<Vec<GlobalPosition>>, symbol: u32) -> &mut Vec<GlobalPosition> {
    let index = symbol as usize;
    if postings.len() <= index {
        postings.resize_with(index + 1, Vec::new);
    }
    &mut postings[index]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::Metadata;

    fn with_ids(ids: &[u128]) -> Vec<EventData> {
        ids.iter()
            .map(|&id| EventData {
                id: EventId(id),
                event_type: "T".into(),
                tags: Vec::new(),
                metadata: Metadata::default(),
                payload: Vec::new(),
            })
            .collect()
    }

    /// The per-event entry stays at the 40 bytes its documentation promises: the id as two
    /// words, the tags as an offset into the arena.
    #[test]
    fn an_index_entry_is_40_bytes() {
        assert_eq!(std::mem::size_of::<EventEntry>(), 40);
    }

    /// Ids that share their low 64 bits are told apart by the whole id: each is found at
    /// its own position, one never indexed is not found, and appending any of them again
    /// is refused as a duplicate unless it is the exact retry of its own append.
    #[test]
    fn ids_sharing_a_low_half_are_told_apart() {
        let stream = StreamId::new("s").unwrap();
        let mut index = StoreIndex::new(Limits::default());
        let low = 0x1234_5678_9abc_def0u128;
        let (a, b, c) = (low, 1 << 64 | low, 2 << 64 | low);
        for (offset, id) in [a, b, 7].into_iter().enumerate() {
            let events = with_ids(&[id]);
            let Ok(AppendPlan::Write { first_position, .. }) =
                index.check_append(&stream, ExpectedVersion::Any, &events, None)
            else {
                panic!("a new id is written");
            };
            assert_eq!(first_position, GlobalPosition(offset as u64));
            index.apply_append(&stream, &events, first_position);
        }
        assert_eq!(index.position_of(EventId(a)), Some(GlobalPosition(0)));
        assert_eq!(index.position_of(EventId(b)), Some(GlobalPosition(1)));
        assert_eq!(index.position_of(EventId(7)), Some(GlobalPosition(2)));
        assert_eq!(index.position_of(EventId(c)), None);
        for ids in [&[c, b][..], &[7, a], &[b, a]] {
            let refused = index.check_append(&stream, ExpectedVersion::Any, &with_ids(ids), None);
            assert!(
                matches!(refused, Err(AppendError::DuplicateEventId { .. })),
                "{ids:?}: {refused:?}"
            );
        }
        // The exact retry of the append that wrote the collided id is recognised as one.
        let retry = index.check_append(&stream, ExpectedVersion::Any, &with_ids(&[b]), None);
        assert!(
            matches!(
                retry,
                Ok(AppendPlan::AlreadyWritten(AppendResult {
                    first_position: GlobalPosition(1),
                    ..
                }))
            ),
            "{retry:?}"
        );
    }

    /// The increasing-ids shortcut answers only for ids that cannot repeat; every other
    /// order still finds a repeat wherever it sits.
    #[test]
    fn repeated_ids_are_found_in_any_order() {
        assert_eq!(repeated_event_id(&with_ids(&[])), None);
        assert_eq!(repeated_event_id(&with_ids(&[4])), None);
        assert_eq!(repeated_event_id(&with_ids(&[1, 2, 3, 9])), None);
        assert_eq!(repeated_event_id(&with_ids(&[9, 3, 2, 1])), None);
        assert_eq!(repeated_event_id(&with_ids(&[1, 1])), Some(EventId(1)));
        assert_eq!(
            repeated_event_id(&with_ids(&[1, 2, 3, 3])),
            Some(EventId(3))
        );
        assert_eq!(
            repeated_event_id(&with_ids(&[5, 1, 2, 5])),
            Some(EventId(5))
        );
        assert_eq!(
            repeated_event_id(&with_ids(&[1, 2, 7, 2])),
            Some(EventId(2))
        );
    }

    /// What `event` reports is what was appended: stream, version, type, and tags in order
    /// with a repeat kept; a position past the end has nothing.
    #[test]
    fn indexed_events_report_what_was_appended() {
        let mut index = StoreIndex::new(Limits::default());
        let stream = StreamId::new("s").expect("stream id");
        let mut events = with_ids(&[1, 2]);
        events[1].event_type = "U".into();
        events[1].tags = vec!["b".into(), "a".into(), "b".into()];
        let AppendPlan::Write { first_position, .. } = index
            .check_append(&stream, ExpectedVersion::NoStream, &events, None)
            .expect("check")
        else {
            panic!("a new append is a write");
        };
        index.apply_append(&stream, &events, first_position);
        let second = index.event(GlobalPosition(1)).expect("second event");
        assert_eq!(
            (second.stream, second.version, second.id, second.event_type),
            (&stream, StreamVersion(1), EventId(2), "U")
        );
        assert_eq!(second.tags().collect::<Vec<_>>(), ["b", "a", "b"]);
        assert_eq!(
            index
                .event(GlobalPosition(0))
                .expect("first")
                .tags()
                .count(),
            0
        );
        assert!(index.event(GlobalPosition(2)).is_none());
    }
}

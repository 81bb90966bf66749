//! The vocabulary of the event store: identifiers, versions, positions and events.
//!
//! Preconditions live in the types: a [`StreamId`] is known to be valid once built,
//! versions and positions cannot be mixed up, and an [`EventId`] is 128 bits.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::limits::Limits;

/// The name of one stream, e.g. `station-CP001` or `account-42`.
///
/// Valid by construction: 1..=[`Limits::stream_id_bytes_max`] bytes of printable ASCII
/// without spaces, so that it can be logged, put in a URL and stored in any backend.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(Arc<str>);

impl TryFrom<String> for StreamId {
    type Error = StreamIdError;

    fn try_from(name: String) -> Result<StreamId, StreamIdError> {
        StreamId::new(&name)
    }
}

impl From<StreamId> for String {
    fn from(stream: StreamId) -> String {
        stream.as_str().to_owned()
    }
}

/// Why a string is not a [`StreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// The empty string names no stream.
    #[error("stream id is empty")]
    Empty,
    /// Longer than [`Limits::stream_id_bytes_max`].
    #[error("stream id is {length} bytes long; the limit is {limit}")]
    TooLong { length: usize, limit: usize },
    /// Only printable ASCII without spaces is allowed.
    #[error(
        "stream id contains byte {byte:#04x} at index {index}; only printable ASCII without spaces is allowed"
    )]
    InvalidByte { index: usize, byte: u8 },
}

impl StreamId {
    /// Validates `name` against the default limits.
    pub fn new(name: &str) -> Result<StreamId, StreamIdError> {
        StreamId::with_limits(name, &Limits::default())
    }

    /// Validates `name` against `limits`.
    pub fn with_limits(name: &str, limits: &Limits) -> Result<StreamId, StreamIdError> {
        if name.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if name.len() > limits.stream_id_bytes_max {
            return Err(StreamIdError::TooLong {
                length: name.len(),
                limit: limits.stream_id_bytes_max,
            });
        }
        if let Some((index, &byte)) = name
            .as_bytes()
            .iter()
            .enumerate()
            .find(|(_, b)| !b.is_ascii_graphic())
        {
            return Err(StreamIdError::InvalidByte { index, byte });
        }
        Ok(StreamId(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({:?})", &*self.0)
    }
}

/// The version of an event inside its stream: contiguous from 0 (I3).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct StreamVersion(pub u64);

impl StreamVersion {
    pub const FIRST: StreamVersion = StreamVersion(0);

    pub fn next(self) -> StreamVersion {
        StreamVersion(self.0 + 1)
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// The position of an event in the whole store: gapless from 0, in commit order (I3).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct GlobalPosition(pub u64);

impl GlobalPosition {
    pub const FIRST: GlobalPosition = GlobalPosition(0);

    pub fn next(self) -> GlobalPosition {
        GlobalPosition(self.0 + 1)
    }
}

impl fmt::Display for GlobalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

/// A 128-bit event identifier, unique in the whole store. Appending an event id a second
/// time is either an idempotent retry of the same append or an error, never a duplicate.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(pub u128);

impl EventId {
    /// The id of the `index`-th event produced by command `command`: handling the same
    /// command twice yields the same event ids, which the store refuses to store twice (I8).
    pub fn derive(command: CommandId, index: u32) -> EventId {
        let high = mix64(command.0 as u64 ^ mix64((command.0 >> 64) as u64 ^ 0x5eed_0001));
        let low = mix64(high ^ u64::from(index) ^ 0x9e37_79b9_7f4a_7c15);
        let high = mix64(high ^ u64::from(index).rotate_left(32));
        EventId((u128::from(high) << 64) | u128::from(low))
    }
}

/// A 128-bit hash of `bytes` for deriving ids from business keys (not cryptographic):
/// two FNV-1a lanes with different offsets, each finished with [`mix64`].
pub fn hash128(bytes: &[u8]) -> u128 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let (mut high, mut low) = (0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142u64);
    for &byte in bytes {
        high = (high ^ u64::from(byte)).wrapping_mul(PRIME);
        low = (low ^ u64::from(byte)).wrapping_mul(PRIME).rotate_left(5);
    }
    let length = bytes.len() as u64;
    (u128::from(mix64(high ^ length)) << 64) | u128::from(mix64(low ^ length.rotate_left(32)))
}

/// SplitMix64's finaliser: a bijection on u64 with good avalanche.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({:032x})", self.0)
    }
}

/// The id a client gives a command. Retrying or resubmitting a command with the same id
/// takes effect at most once (I8).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CommandId(pub u128);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandId({:032x})", self.0)
    }
}

/// What the writer expects the stream's current state to be. A mismatch fails the whole
/// append with [`crate::store::AppendError::WrongExpectedVersion`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check at all.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must hold at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(StreamVersion),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(version) => write!(f, "{version}"),
        }
    }
}

/// The state a stream was actually in when an append was checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum CurrentVersion {
    NoStream,
    Current(StreamVersion),
}

impl CurrentVersion {
    /// The version the next event appended to this stream gets.
    pub fn next_version(self) -> StreamVersion {
        match self {
            CurrentVersion::NoStream => StreamVersion::FIRST,
            CurrentVersion::Current(version) => version.next(),
        }
    }
}

impl fmt::Display for CurrentVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrentVersion::NoStream => f.write_str("no stream"),
            CurrentVersion::Current(version) => write!(f, "{version}"),
        }
    }
}

/// Where an event came from. Times are the store user's own clock (never the station's),
/// passed in by the caller: the core reads no clock.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Metadata {
    pub command_id: Option<CommandId>,
    pub causation_id: Option<EventId>,
    pub correlation_id: Option<CommandId>,
    pub recorded_at_millis: u64,
}

/// An event as a writer hands it to the store.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EventData {
    pub id: EventId,
    pub event_type: String,
    /// Tags make an event findable by [`Query`] across streams (e.g. `seat:show-1:A7`).
    pub tags: Vec<String>,
    pub metadata: Metadata,
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
}

/// An event as the store returns it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub stream: StreamId,
    pub version: StreamVersion,
    pub position: GlobalPosition,
    pub id: EventId,
    pub event_type: String,
    pub tags: Vec<String>,
    pub metadata: Metadata,
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
}

impl RecordedEvent {
    pub fn from_data(
        stream: StreamId,
        version: StreamVersion,
        position: GlobalPosition,
        data: EventData,
    ) -> RecordedEvent {
        RecordedEvent {
            stream,
            version,
            position,
            id: data.id,
            event_type: data.event_type,
            tags: data.tags,
            metadata: data.metadata,
            payload: data.payload,
        }
    }
}

/// A stored event of one stream, borrowed from the store's own buffer: what replay reads
/// (see [`crate::store::EventStore::visit_stream`]). It has no tags; readers that need
/// them use the owned reads. Its metadata is decoded only when asked for.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    pub version: StreamVersion,
    pub position: GlobalPosition,
    pub id: EventId,
    pub event_type: &'a str,
    pub payload: &'a [u8],
    metadata: MetadataSource<'a>,
}

#[derive(Clone, Copy, Debug)]
enum MetadataSource<'a> {
    Decoded(&'a Metadata),
    Compact(CompactMetadata<'a>),
}

impl<'a> EventView<'a> {
    pub fn new(
        version: StreamVersion,
        position: GlobalPosition,
        id: EventId,
        event_type: &'a str,
        payload: &'a [u8],
        metadata: CompactMetadata<'a>,
    ) -> EventView<'a> {
        EventView {
            version,
            position,
            id,
            event_type,
            payload,
            metadata: MetadataSource::Compact(metadata),
        }
    }

    pub fn metadata(&self) -> Metadata {
        match self.metadata {
            MetadataSource::Decoded(metadata) => *metadata,
            MetadataSource::Compact(compact) => compact.decode(),
        }
    }
}

impl PartialEq for EventView<'_> {
    fn eq(&self, other: &EventView<'_>) -> bool {
        (
            self.version,
            self.position,
            self.id,
            self.event_type,
            self.payload,
        ) == (
            other.version,
            other.position,
            other.id,
            other.event_type,
            other.payload,
        ) && self.metadata() == other.metadata()
    }
}

impl Eq for EventView<'_> {}

impl RecordedEvent {
    pub fn view(&self) -> EventView<'_> {
        EventView {
            version: self.version,
            position: self.position,
            id: self.id,
            event_type: &self.event_type,
            payload: &self.payload,
            metadata: MetadataSource::Decoded(&self.metadata),
        }
    }
}

/// [`Metadata`] in its compact binary form, checked for length and not yet decoded:
/// flags u8 (bit 0 command, bit 1 causation, bit 2 correlation, the rest zero), each
/// present id as u128, then recorded_at u64; little-endian.
#[derive(Clone, Copy, Debug)]
pub struct CompactMetadata<'a> {
    bytes: &'a [u8],
}

impl<'a> CompactMetadata<'a> {
    const FLAG_BITS: u8 = 0b111;

    /// Splits compact metadata off the front of `bytes`; `None` when they are too short
    /// for the ids their flags announce or use an unknown flag.
    #[inline]
    pub fn split(bytes: &'a [u8]) -> Option<(CompactMetadata<'a>, &'a [u8])> {
        let flags = *bytes.first()?;
        if flags & !CompactMetadata::FLAG_BITS != 0 {
            return None;
        }
        let len = 1 + 16 * flags.count_ones() as usize + 8;
        (bytes.len() >= len).then(|| {
            let (compact, rest) = bytes.split_at(len);
            (CompactMetadata { bytes: compact }, rest)
        })
    }

    pub fn decode(&self) -> Metadata {
        let flags = self.bytes[0];
        let mut rest = &self.bytes[1..];
        let mut id = |present: bool| {
            present.then(|| {
                let (id, tail) = rest.split_first_chunk::<16>().expect("length checked");
                rest = tail;
                u128::from_le_bytes(*id)
            })
        };
        let command_id = id(flags & 1 != 0).map(CommandId);
        let causation_id = id(flags & 2 != 0).map(EventId);
        let correlation_id = id(flags & 4 != 0).map(CommandId);
        let recorded_at = rest.first_chunk::<8>().expect("length checked");
        Metadata {
            command_id,
            causation_id,
            correlation_id,
            recorded_at_millis: u64::from_le_bytes(*recorded_at),
        }
    }
}

impl Metadata {
    /// Appends the compact form read by [`CompactMetadata`].
    pub fn encode_compact(&self, out: &mut Vec<u8>) {
        let flags = u8::from(self.command_id.is_some())
            | (u8::from(self.causation_id.is_some()) << 1)
            | (u8::from(self.correlation_id.is_some()) << 2);
        out.push(flags);
        for id in [
            self.command_id.map(|c| c.0),
            self.causation_id.map(|c| c.0),
            self.correlation_id.map(|c| c.0),
        ]
        .into_iter()
        .flatten()
        {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out.extend_from_slice(&self.recorded_at_millis.to_le_bytes());
    }
}

/// One clause of a [`Query`]: events whose type is one of `event_types` (any type when
/// empty) and that carry every tag in `tags`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct QueryItem {
    pub event_types: Vec<String>,
    pub tags: Vec<String>,
}

impl QueryItem {
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        let type_matches =
            self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type);
        type_matches && self.tags.iter().all(|wanted| tags.contains(wanted))
    }
}

/// A set of events across all streams: an event matches when any item matches.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Query {
    pub items: Vec<QueryItem>,
}

impl Query {
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        self.items.iter().any(|item| item.matches(event_type, tags))
    }

    /// Events carrying all of `tags`, of any type.
    pub fn tagged<I, T>(tags: I) -> Query
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Query {
            items: vec![QueryItem {
                event_types: Vec::new(),
                tags: tags.into_iter().map(Into::into).collect(),
            }],
        }
    }
}

/// The Dynamic Consistency Boundary check: the append fails if any event matching `query`
/// has a position after `after` (`None`: any matching event at all).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AppendCondition {
    pub query: Query,
    pub after: Option<GlobalPosition>,
}

/// What a successful append reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AppendResult {
    /// Version of the first appended event.
    pub first_version: StreamVersion,
    /// Version of the last appended event: the stream's version after the append.
    pub last_version: StreamVersion,
    /// Global position of the first appended event.
    pub first_position: GlobalPosition,
    /// False when every event had already been written by an earlier, identical append
    /// (an idempotent retry): nothing new was stored.
    pub written: bool,
}

/// A saved aggregate state at a stream version. `schema_version` is the state encoding's
/// version: a reader expecting another schema ignores the snapshot instead of misreading it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: StreamVersion,
    pub schema_version: u32,
    #[serde(with = "base64_bytes")]
    pub state: Vec<u8>,
}

/// Bytes in serialised forms as one base64 string rather than an array of numbers.
mod base64_bytes {
    use data_encoding::BASE64;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64.decode(text.as_bytes()).map_err(D::Error::custom)
    }
}

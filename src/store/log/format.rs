//! The durable log's byte format. Pure: bytes in, values out.
//!
//! A segment file is a 64-byte header followed by records and then zeros (segments are
//! preallocated). All integers are little-endian.
//!
//! ```text
//! header  0..8   magic "EVSRCLOG"
//!         8..12  format version (FORMAT_VERSION)
//!        12..16  segment index (0, 1, 2, … in file-name order)
//!        16..24  global position of the first event in the segment
//!        24..32  segment length in bytes
//!        32..36  CRC-32 of bytes 0..32
//!        36..64  zero
//! record  0..4   magic "EvR1"
//!         4..8   body_len
//!         8      kind: 1 append, 2 snapshot
//!         9..12  zero
//!        12..16  CRC-32 of bytes 0..12 (the header vouches for its own length)
//!        16..20  CRC-32 of the body
//!        20..24  zero
//!        24..    body, then zero padding to a multiple of 8, then
//!        last 8  the trailer "EvR1.end" (RECORD_TRAILER)
//! append body:   first position u64, first version u64, stream (u16 len + bytes),
//!                event count u32, events
//! event:         id u128, flags u8 (bit0 command, bit1 causation, bit2 correlation),
//!                [command u128], [causation u128], [correlation u128], recorded_at u64,
//!                type (u16 len + bytes), tag count u16, tags (u16 len + bytes each),
//!                payload (u32 len + bytes)
//! snapshot body: version u64, schema version u32, stream (u16 len + bytes),
//!                state (u32 len + bytes)
//! ```
//!
//! One append is one record, so a torn write loses whole appends, never part of one. The
//! header has its own checksum so that recovery can trust a record's length — or know
//! it must not — when deciding whether damage is a torn tail (see `recovery.rs`). The
//! trailer, whose bytes are all non-zero, is the last thing a record's write puts down:
//! a damaged record whose trailer is there was written whole, so the damage came later
//! (at rest) and is refused, never cut as a torn tail. (Version 1 had no trailer, and
//! could not tell a bit flipped at rest in its last record from a torn write.)

use crate::core::types::{
    CompactMetadata, EventData, EventId, GlobalPosition, Snapshot, StreamId, StreamVersion,
};

pub const SEGMENT_MAGIC: [u8; 8] = *b"EVSRCLOG";
pub const FORMAT_VERSION: u32 = 2;
pub const SEGMENT_HEADER_BYTES: u64 = 64;
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"EvR1");
pub const RECORD_HEADER_BYTES: usize = 24;
pub const RECORD_ALIGN: usize = 8;
/// The last bytes of every record: all non-zero, so a record whose last byte is zero was
/// not written whole.
pub const RECORD_TRAILER: [u8; 8] = *b"EvR1.end";
pub const RECORD_TRAILER_BYTES: usize = RECORD_TRAILER.len();
const _: () = assert!(RECORD_TRAILER_BYTES.is_multiple_of(RECORD_ALIGN));
pub const KIND_APPEND: u8 = 1;
pub const KIND_SNAPSHOT: u8 = 2;

/// The fixed part of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub index: u32,
    pub first_position: GlobalPosition,
    pub segment_bytes: u64,
}

/// Why bytes do not decode. Callers add the file and offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    BadMagic,
    UnsupportedVersion(u32),
    ChecksumMismatch,
    HeaderChecksumMismatch,
    Truncated,
    BadLength(u64),
    UnknownKind(u8),
    BadStreamId(String),
    BadUtf8,
    NonZeroReserved,
    /// The record's trailer is not [`RECORD_TRAILER`].
    BadTrailer,
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::BadMagic => f.write_str("bad magic number"),
            FormatError::UnsupportedVersion(v) => write!(
                f,
                "format version {v} is not supported (this build reads version {FORMAT_VERSION})"
            ),
            FormatError::ChecksumMismatch => f.write_str("checksum mismatch"),
            FormatError::HeaderChecksumMismatch => f.write_str("record header checksum mismatch"),
            FormatError::Truncated => f.write_str("record truncated"),
            FormatError::BadLength(length) => write!(f, "implausible length {length}"),
            FormatError::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            FormatError::BadStreamId(why) => write!(f, "invalid stream id: {why}"),
            FormatError::BadUtf8 => f.write_str("invalid UTF-8 in a string field"),
            FormatError::NonZeroReserved => f.write_str("reserved or padding bytes are not zero"),
            FormatError::BadTrailer => f.write_str("the record's trailer is damaged"),
        }
    }
}

pub fn encode_segment_header(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES as usize];
    bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[12..16].copy_from_slice(&header.index.to_le_bytes());
    bytes[16..24].copy_from_slice(&header.first_position.0.to_le_bytes());
    bytes[24..32].copy_from_slice(&header.segment_bytes.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..32]);
    bytes[32..36].copy_from_slice(&crc.to_le_bytes());
    bytes
}

pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, FormatError> {
    if bytes.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(FormatError::Truncated);
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(FormatError::BadMagic);
    }
    let crc = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&bytes[0..32]) {
        return Err(FormatError::ChecksumMismatch);
    }
    if bytes[36..SEGMENT_HEADER_BYTES as usize]
        .iter()
        .any(|&b| b != 0)
    {
        return Err(FormatError::NonZeroReserved);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    Ok(SegmentHeader {
        index: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
        first_position: GlobalPosition(u64::from_le_bytes(
            bytes[16..24].try_into().expect("8 bytes"),
        )),
        segment_bytes: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
    })
}

/// Bytes a record with a body of `body_len` bytes occupies, padding and trailer included.
pub fn record_bytes(body_len: usize) -> usize {
    (RECORD_HEADER_BYTES + body_len).next_multiple_of(RECORD_ALIGN) + RECORD_TRAILER_BYTES
}

/// Upper bound of one event's encoded size, for limit checks before encoding.
pub fn event_bytes_max(event: &EventData) -> usize {
    16 + 1
        + 3 * 16
        + 8
        + 2
        + event.event_type.len()
        + 2
        + event.tags.iter().map(|t| 2 + t.len()).sum::<usize>()
        + 4
        + event.payload.len()
}

/// Appends a complete record to `out`. `write_body` writes the body.
fn encode_record(out: &mut Vec<u8>, kind: u8, write_body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    encode_unsealed_record(out, kind, write_body);
    seal_body(&mut out[start..]);
}

/// Appends a record to `out` whose header is complete but whose body checksum is not
/// written yet ([`seal_body`] writes it): a record left so never passes verification.
fn encode_unsealed_record(out: &mut Vec<u8>, kind: u8, write_body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES - 4]);
    write_body(out);
    let body_len = out.len() - start - RECORD_HEADER_BYTES;
    out[start + 4..start + 8].copy_from_slice(&len32(body_len));
    out[start + 8] = kind;
    let header_crc = crc32fast::hash(&out[start..start + 12]);
    out[start + 12..start + 16].copy_from_slice(&header_crc.to_le_bytes());
    out.resize(start + record_bytes(body_len) - RECORD_TRAILER_BYTES, 0);
    out.extend_from_slice(&RECORD_TRAILER);
}

/// Writes the body checksum of `record` (which starts at its header).
fn seal_body(record: &mut [u8]) {
    let body_len = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes")) as usize;
    let body_crc = crc32fast::hash(&record[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + body_len]);
    record[16..20].copy_from_slice(&body_crc.to_le_bytes());
}

/// The longest string a record holds (a stream id, an event type, a tag): a u16 length.
pub const STR_BYTES_MAX: usize = u16::MAX as usize;
/// The most tags one event holds: a u16 count.
pub const TAGS_MAX: usize = u16::MAX as usize;
/// The longest payload or snapshot state, and the most events in one append: u32.
pub const LEN32_MAX: usize = u32::MAX as usize;

/// `length` in a u16 field; the configuration was checked against it at open
/// (`LogConfig::validate`), so a wider one is a bug, never a silently wrapped length.
fn len16(length: usize) -> [u8; 2] {
    u16::try_from(length)
        .expect("lengths are validated against the log's field widths")
        .to_le_bytes()
}

/// `length` in a u32 field (see [`len16`]).
fn len32(length: usize) -> [u8; 4] {
    u32::try_from(length)
        .expect("lengths are validated against the log's field widths")
        .to_le_bytes()
}

fn put_str16(out: &mut Vec<u8>, value: &str) {
    out.extend_from_slice(&len16(value.len()));
    out.extend_from_slice(value.as_bytes());
}

/// Encodes an append of `events` to `stream` at the end of `out` before its place in the
/// log is known: position and version zero, and no body checksum, so that it cannot pass
/// for a record until [`place_append`] gives it its place. The log encodes outside its
/// lock this way and places under it, computing the checksum once.
pub fn encode_unplaced_append(out: &mut Vec<u8>, stream: &StreamId, events: &[EventData]) {
    encode_unsealed_record(out, KIND_APPEND, |out| {
        write_append_body(out, StreamVersion(0), GlobalPosition(0), stream, events);
    });
}

/// An append record's body: its place, the stream, and the events.
fn write_append_body(
    out: &mut Vec<u8>,
    first_version: StreamVersion,
    first_position: GlobalPosition,
    stream: &StreamId,
    events: &[EventData],
) {
    out.extend_from_slice(&first_position.0.to_le_bytes());
    out.extend_from_slice(&first_version.0.to_le_bytes());
    put_str16(out, stream.as_str());
    out.extend_from_slice(&len32(events.len()));
    for event in events {
        encode_event(out, event);
    }
}

/// Gives an append record encoded by [`encode_unplaced_append`] its place in the log:
/// writes its first position and version and then its body checksum.
pub fn place_append(
    record: &mut [u8],
    first_version: StreamVersion,
    first_position: GlobalPosition,
) {
    let body = RECORD_HEADER_BYTES;
    record[body..body + 8].copy_from_slice(&first_position.0.to_le_bytes());
    record[body + 8..body + 16].copy_from_slice(&first_version.0.to_le_bytes());
    seal_body(record);
}

fn encode_event(out: &mut Vec<u8>, event: &EventData) {
    out.extend_from_slice(&event.id.0.to_le_bytes());
    event.metadata.encode_compact(out);
    put_str16(out, &event.event_type);
    out.extend_from_slice(&len16(event.tags.len()));
    for tag in &event.tags {
        put_str16(out, tag);
    }
    out.extend_from_slice(&len32(event.payload.len()));
    out.extend_from_slice(&event.payload);
}

/// Encodes a snapshot of `stream` as one record at the end of `out`.
pub fn encode_snapshot(out: &mut Vec<u8>, stream: &StreamId, snapshot: &Snapshot) {
    encode_record(out, KIND_SNAPSHOT, |out| {
        out.extend_from_slice(&snapshot.version.0.to_le_bytes());
        out.extend_from_slice(&snapshot.schema_version.to_le_bytes());
        put_str16(out, stream.as_str());
        out.extend_from_slice(&len32(snapshot.state.len()));
        out.extend_from_slice(&snapshot.state);
    });
}

/// A record's header, checked for plausibility but not yet for its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub body_len: u32,
    pub kind: u8,
}

impl RecordHeader {
    pub fn total_bytes(&self) -> usize {
        record_bytes(self.body_len as usize)
    }
}

/// True when `bytes` (a record header's worth) are all zero: the end of the written data.
pub fn is_end_marker(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Checks a record header (magic, its own checksum, reserved bytes, length, kind).
pub fn decode_record_header(
    bytes: &[u8; RECORD_HEADER_BYTES],
    body_len_max: u64,
) -> Result<RecordHeader, FormatError> {
    let word = |range: std::ops::Range<usize>| {
        u32::from_le_bytes(bytes[range].try_into().expect("4 bytes"))
    };
    if word(0..4) != RECORD_MAGIC {
        return Err(FormatError::BadMagic);
    }
    if word(12..16) != crc32fast::hash(&bytes[0..12]) {
        return Err(FormatError::HeaderChecksumMismatch);
    }
    if bytes[9..12].iter().chain(&bytes[20..24]).any(|&b| b != 0) {
        return Err(FormatError::NonZeroReserved);
    }
    let body_len = word(4..8);
    if u64::from(body_len) > body_len_max {
        return Err(FormatError::BadLength(u64::from(body_len)));
    }
    let kind = bytes[8];
    if kind != KIND_APPEND && kind != KIND_SNAPSHOT {
        return Err(FormatError::UnknownKind(kind));
    }
    Ok(RecordHeader {
        crc: word(16..20),
        body_len,
        kind,
    })
}

/// Verifies a whole record (header and body checksums, zero padding); returns its body.
pub fn verify_record(record: &[u8]) -> Result<&[u8], FormatError> {
    let header: &[u8; RECORD_HEADER_BYTES] = record
        .get(..RECORD_HEADER_BYTES)
        .and_then(|h| h.try_into().ok())
        .ok_or(FormatError::Truncated)?;
    let parsed = decode_record_header(header, u64::from(u32::MAX))?;
    let end = RECORD_HEADER_BYTES + parsed.body_len as usize;
    if record.len() < end {
        return Err(FormatError::Truncated);
    }
    if crc32fast::hash(&record[RECORD_HEADER_BYTES..end]) != parsed.crc {
        return Err(FormatError::ChecksumMismatch);
    }
    // Padding and trailer are not checksummed, so they must be exactly what the writer
    // put down: then every byte is checked.
    let record_end = record_bytes(parsed.body_len as usize);
    let trailer = record
        .get(record_end - RECORD_TRAILER_BYTES..record_end)
        .ok_or(FormatError::Truncated)?;
    if record[end..record_end - RECORD_TRAILER_BYTES]
        .iter()
        .any(|&b| b != 0)
    {
        return Err(FormatError::NonZeroReserved);
    }
    if trailer != RECORD_TRAILER {
        return Err(FormatError::BadTrailer);
    }
    Ok(&record[RECORD_HEADER_BYTES..end])
}

/// A decoded append record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRecord {
    pub first_position: GlobalPosition,
    pub first_version: StreamVersion,
    pub stream: StreamId,
    pub events: Vec<EventData>,
}

/// A decoded snapshot record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub stream: StreamId,
    pub snapshot: Snapshot,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, count: usize) -> Result<&'a [u8], FormatError> {
        if self.bytes.len() < count {
            return Err(FormatError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        Ok(self.take(N)?.try_into().expect("exact length"))
    }

    #[inline]
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    #[inline]
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    #[inline]
    fn u128(&mut self) -> Result<u128, FormatError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    fn str16(&mut self) -> Result<&'a str, FormatError> {
        let length = self.u16()? as usize;
        std::str::from_utf8(self.take(length)?).map_err(|_| FormatError::BadUtf8)
    }

    fn stream_id(&mut self) -> Result<StreamId, FormatError> {
        let name = self.str16()?;
        // Validated against the default limits' syntax only; the store checked its own
        // length limit when the stream was first written.
        StreamId::with_limits(
            name,
            &crate::core::Limits {
                stream_id_bytes_max: usize::from(u16::MAX),
                ..crate::core::Limits::default()
            },
        )
        .map_err(|e| FormatError::BadStreamId(e.to_string()))
    }

    fn finish(&self) -> Result<(), FormatError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(FormatError::BadLength(self.bytes.len() as u64))
        }
    }
}

/// The fixed part of an append body; its events follow (see [`AppendEvents`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendHeader {
    pub first_position: GlobalPosition,
    pub first_version: StreamVersion,
    pub stream: StreamId,
    pub event_count: u32,
}

/// One event of an append body, borrowed from it. Tags and metadata are left encoded: the
/// replay path needs neither, and [`EventFields::to_data`] decodes them for the owned reads.
#[derive(Clone, Copy, Debug)]
pub struct EventFields<'a> {
    pub id: EventId,
    pub metadata: CompactMetadata<'a>,
    pub event_type: &'a str,
    tag_count: u16,
    tags: &'a [u8],
    pub payload: &'a [u8],
}

impl EventFields<'_> {
    pub fn to_data(self) -> Result<EventData, FormatError> {
        let mut reader = Reader { bytes: self.tags };
        let mut tags = Vec::with_capacity(usize::from(self.tag_count));
        for _ in 0..self.tag_count {
            tags.push(reader.str16()?.to_owned());
        }
        reader.finish()?;
        Ok(EventData {
            id: self.id,
            event_type: self.event_type.to_owned(),
            tags,
            metadata: self.metadata.decode(),
            payload: self.payload.to_vec(),
        })
    }
}

/// The events of an append body, decoded one by one without copying.
pub struct AppendEvents<'a> {
    reader: Reader<'a>,
    remaining: u32,
    /// Types seen in this record: a stream's events have few types, and one seen before
    /// is borrowed again instead of being validated as UTF-8 again.
    types: TypeCache<'a>,
}

/// The last [`TypeCache::SLOTS`] distinct event types of a record, each with its bytes
/// as one 128-bit word (types of up to 16 bytes; longer ones are validated every time).
#[derive(Default)]
struct TypeCache<'a> {
    slots: [(u128, &'a str); TypeCache::SLOTS],
    next: usize,
}

impl<'a> TypeCache<'a> {
    const SLOTS: usize = 8;

    /// The type whose `len` bytes start `rest`.
    #[inline]
    fn take(&mut self, rest: &'a [u8], len: usize) -> Result<&'a str, FormatError> {
        let bytes = rest.get(..len).ok_or(FormatError::Truncated)?;
        // A 16-byte window (the type and what follows it), masked to the type's length.
        let key = rest
            .first_chunk::<16>()
            .filter(|_| len <= 16)
            .map(|window| {
                let mask = u128::MAX.checked_shr(8 * (16 - len as u32)).unwrap_or(0);
                u128::from_le_bytes(*window) & mask
            });
        if let Some(key) = key
            && let Some(&(_, known)) = self
                .slots
                .iter()
                .find(|&&(k, known)| k == key && known.len() == len)
        {
            return Ok(known);
        }
        let event_type = std::str::from_utf8(bytes).map_err(|_| FormatError::BadUtf8)?;
        if let Some(key) = key {
            self.slots[self.next] = (key, event_type);
            self.next = (self.next + 1) % TypeCache::SLOTS;
        }
        Ok(event_type)
    }
}

/// Splits an append body into its header and its events. The events' iterator reports
/// a malformed event, and bytes left over after the last one, as errors.
pub fn decode_append_header(body: &[u8]) -> Result<(AppendHeader, AppendEvents<'_>), FormatError> {
    let mut reader = Reader { bytes: body };
    let first_position = GlobalPosition(reader.u64()?);
    let first_version = StreamVersion(reader.u64()?);
    let stream = reader.stream_id()?;
    let count = reader.u32()?;
    // Each event takes at least 34 bytes: refuse counts the body cannot hold.
    if count == 0 || count as usize > body.len() / 34 {
        return Err(FormatError::BadLength(u64::from(count)));
    }
    let header = AppendHeader {
        first_position,
        first_version,
        stream,
        event_count: count,
    };
    Ok((
        header,
        AppendEvents {
            reader,
            remaining: count,
            types: TypeCache::default(),
        },
    ))
}

impl<'a> Iterator for AppendEvents<'a> {
    type Item = Result<EventFields<'a>, FormatError>;

    // Always inlined, like `decode_event`: returned through memory, an event's fields
    // cost the replay loop a store-forwarding stall per event.
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let event = decode_event(&mut self.reader, &mut self.types);
        let event = match event {
            Ok(event) if self.remaining == 0 => self.reader.finish().map(|()| event),
            other => other,
        };
        if event.is_err() {
            self.remaining = 0;
        }
        Some(event)
    }
}

pub fn decode_append(body: &[u8]) -> Result<AppendRecord, FormatError> {
    let (header, events) = decode_append_header(body)?;
    let events = events
        .map(|event| event?.to_data())
        .collect::<Result<Vec<EventData>, FormatError>>()?;
    Ok(AppendRecord {
        first_position: header.first_position,
        first_version: header.first_version,
        stream: header.stream,
        events,
    })
}

/// Decodes one event; its type is looked up in (or added to) `types`.
#[inline(always)]
fn decode_event<'a>(
    reader: &mut Reader<'a>,
    types: &mut TypeCache<'a>,
) -> Result<EventFields<'a>, FormatError> {
    let id = EventId(reader.u128()?);
    let (metadata, rest) = CompactMetadata::split(reader.bytes).ok_or(FormatError::Truncated)?;
    reader.bytes = rest;
    let type_len = usize::from(reader.u16()?);
    let event_type = types.take(reader.bytes, type_len)?;
    reader.bytes = &reader.bytes[type_len..];
    let tag_count = reader.u16()?;
    let tags_start = reader.bytes;
    for _ in 0..tag_count {
        let length = reader.u16()?;
        reader.take(usize::from(length))?;
    }
    let tags = &tags_start[..tags_start.len() - reader.bytes.len()];
    let payload_len = reader.u32()? as usize;
    let payload = reader.take(payload_len)?;
    Ok(EventFields {
        id,
        metadata,
        event_type,
        tag_count,
        tags,
        payload,
    })
}

pub fn decode_snapshot(body: &[u8]) -> Result<SnapshotRecord, FormatError> {
    let mut reader = Reader { bytes: body };
    let version = StreamVersion(reader.u64()?);
    let schema_version = reader.u32()?;
    let stream = reader.stream_id()?;
    let state_len = reader.u32()? as usize;
    let state = reader.take(state_len)?.to_vec();
    reader.finish()?;
    Ok(SnapshotRecord {
        stream,
        snapshot: Snapshot {
            version,
            schema_version,
            state,
        },
    })
}

#[cfg(test)]
mod tests {
    //! Round trips and rejection of damaged bytes at the format level.
    use super::*;
    use crate::core::types::{CommandId, Metadata};

    /// Encodes an append of `events` to `stream` at its place, as one record at the end of
    /// `out`, in one go (sealed as it is written, as every other kind of record is), not
    /// through the log's encode-then-place path.
    fn encode_append(
        out: &mut Vec<u8>,
        stream: &StreamId,
        first_version: StreamVersion,
        first_position: GlobalPosition,
        events: &[EventData],
    ) {
        encode_record(out, KIND_APPEND, |out| {
            write_append_body(out, first_version, first_position, stream, events);
        });
    }

    fn sample_event(index: u8) -> EventData {
        EventData {
            id: EventId(u128::from(index) << 64 | 7),
            event_type: format!("Type{index}"),
            tags: vec!["station:CP1".into(), format!("connector:{index}")],
            metadata: Metadata {
                command_id: Some(CommandId(42)),
                causation_id: None,
                correlation_id: Some(CommandId(9)),
                recorded_at_millis: 1_700_000_000_000,
            },
            payload: vec![index; usize::from(index) * 3],
        }
    }

    #[test]
    fn append_record_round_trips_and_is_aligned() {
        let stream = StreamId::new("station-CP1").unwrap();
        let events: Vec<EventData> = (0..3).map(sample_event).collect();
        let mut out = Vec::new();
        encode_append(
            &mut out,
            &stream,
            StreamVersion(4),
            GlobalPosition(10),
            &events,
        );
        assert_eq!(out.len() % RECORD_ALIGN, 0);
        let body = verify_record(&out).unwrap();
        let record = decode_append(body).unwrap();
        assert_eq!(record.stream, stream);
        assert_eq!(record.first_version, StreamVersion(4));
        assert_eq!(record.first_position, GlobalPosition(10));
        assert_eq!(record.events, events);
    }

    /// A record encoded at a placeholder place and then placed is byte for byte the record
    /// encoded at that place directly: same positions, same checksums, same padding.
    #[test]
    fn a_placed_record_equals_one_encoded_in_place() {
        let stream = StreamId::new("station-CP1").unwrap();
        let events: Vec<EventData> = (0..3).map(sample_event).collect();
        let mut direct = Vec::new();
        encode_append(
            &mut direct,
            &stream,
            StreamVersion(4),
            GlobalPosition(10),
            &events,
        );
        let mut placed = Vec::new();
        encode_unplaced_append(&mut placed, &stream, &events);
        assert_ne!(placed, direct);
        place_append(&mut placed, StreamVersion(4), GlobalPosition(10));
        assert_eq!(placed, direct);
        let record = decode_append(verify_record(&placed).unwrap()).unwrap();
        assert_eq!(record.first_position, GlobalPosition(10));
    }

    /// The log's path: a record encoded before its place is known cannot pass verification
    /// (no body checksum yet); once placed, it verifies and decodes to what was appended,
    /// at its place.
    #[test]
    fn an_unplaced_record_is_no_record_until_placed() {
        let stream = StreamId::new("station-CP1").unwrap();
        let events: Vec<EventData> = (0..3).map(sample_event).collect();
        let mut record = Vec::new();
        encode_unplaced_append(&mut record, &stream, &events);
        assert!(
            verify_record(&record).is_err(),
            "an unplaced record is refused"
        );
        place_append(&mut record, StreamVersion(7), GlobalPosition(70));
        let decoded = decode_append(verify_record(&record).unwrap()).unwrap();
        assert_eq!(decoded.stream, stream);
        assert_eq!(decoded.first_version, StreamVersion(7));
        assert_eq!(decoded.first_position, GlobalPosition(70));
        assert_eq!(decoded.events, events);
    }

    #[test]
    fn every_single_bit_flip_in_a_record_is_detected() {
        let stream = StreamId::new("s").unwrap();
        let mut out = Vec::new();
        encode_append(
            &mut out,
            &stream,
            StreamVersion(0),
            GlobalPosition(0),
            &[sample_event(1)],
        );
        let body_end =
            RECORD_HEADER_BYTES + u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize;
        for byte in 0..body_end {
            for bit in 0..8 {
                let mut damaged = out.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    verify_record(&damaged).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn snapshot_record_round_trips() {
        let stream = StreamId::new("account-1").unwrap();
        let snapshot = Snapshot {
            version: StreamVersion(999),
            schema_version: 3,
            state: b"{\"balance\":5}".to_vec(),
        };
        let mut out = Vec::new();
        encode_snapshot(&mut out, &stream, &snapshot);
        let record = decode_snapshot(verify_record(&out).unwrap()).unwrap();
        assert_eq!(record.stream, stream);
        assert_eq!(record.snapshot, snapshot);
    }

    #[test]
    fn segment_header_rejects_other_versions_and_damage() {
        let header = SegmentHeader {
            index: 3,
            first_position: GlobalPosition(77),
            segment_bytes: 1 << 20,
        };
        let bytes = encode_segment_header(&header);
        assert_eq!(decode_segment_header(&bytes).unwrap(), header);
        let mut damaged = bytes;
        damaged[20] ^= 0x10;
        assert_eq!(
            decode_segment_header(&damaged),
            Err(FormatError::ChecksumMismatch)
        );
        // An older format (1: records without a trailer) and a newer one are refused.
        for other in [1, FORMAT_VERSION + 1] {
            let mut foreign = bytes;
            foreign[8..12].copy_from_slice(&other.to_le_bytes());
            let crc = crc32fast::hash(&foreign[0..32]);
            foreign[32..36].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                decode_segment_header(&foreign),
                Err(FormatError::UnsupportedVersion(other))
            );
        }
    }
}

//! Opening a log: read every segment, rebuild the index, cut a torn tail, refuse damage.
//!
//! The rule that separates a torn tail from corruption: a crash can only damage the last
//! write, which lies at the end of the last segment, and leaves it unfinished. So a
//! damaged record is accepted as a torn tail only when it is in the last segment, no
//! valid record follows it anywhere, and its last byte — the end of its non-zero trailer,
//! the last byte its write puts down — is missing; otherwise the log refuses to open and
//! names the file and offset. An acknowledged record
//! is therefore never silently dropped from the middle, and a damaged one is never read.
//!
//! What recovery accepts it then makes durable. After a failed fsync a kernel may mark the
//! failed pages clean: they still read back, but no later fsync writes them, so the next
//! power loss would punch a hole under everything appended since (PostgreSQL's
//! "fsyncgate"). Only the last group can be in that state, and a group holds at most
//! `group_commit_bytes_max` bytes, so open writes those last bytes again — the very bytes
//! whose checksums it just verified — and syncs them before anything can build on them.
//! The zeros past the tail get the same treatment: open writes them again over a group's
//! span, so a torn tail once cut never comes back.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::index::{AppendPlan, StoreIndex};
use crate::core::types::{ExpectedVersion, StreamId};
use crate::storage::{Storage, StorageFile};
use crate::store::log::format::{
    self, FormatError, KIND_APPEND, RECORD_ALIGN, RECORD_HEADER_BYTES, RECORD_MAGIC,
    SEGMENT_HEADER_BYTES,
};
use crate::store::log::{Location, LogConfig, OpenError, SEGMENT_SUFFIX, SnapshotSlot};

/// Everything [`super::LogStore`] needs to resume.
pub(super) struct Recovered {
    pub index: StoreIndex,
    pub locations: Vec<Location>,
    pub snapshots: BTreeMap<StreamId, SnapshotSlot>,
    pub segments: Vec<Arc<dyn StorageFile>>,
    /// Where the next record goes in the last segment (`None`: no segment yet).
    pub tail_offset: Option<u64>,
    /// Torn tails cut (0 or 1): what the simulator counts as coverage.
    pub torn_tails_cut: u32,
}

/// Parses `0000000042.evlog` into 42.
pub(super) fn segment_index_from_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 10 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(super) fn segment_name(index: u32) -> String {
    format!("{index:010}{SEGMENT_SUFFIX}")
}

pub(super) fn recover(storage: &dyn Storage, config: &LogConfig) -> Result<Recovered, OpenError> {
    let io_error = |file: String| move |source| OpenError::Io { file, source };
    let names: Vec<String> = storage
        .list()
        .map_err(io_error(storage.describe("")))?
        .into_iter()
        .filter(|name| name.ends_with(SEGMENT_SUFFIX))
        .collect();
    let mut recovered = Recovered {
        index: StoreIndex::new(config.limits.clone()),
        locations: Vec::new(),
        snapshots: BTreeMap::new(),
        segments: Vec::new(),
        tail_offset: None,
        torn_tails_cut: 0,
    };
    // The verified bytes at the end of each recent segment: (file, offset, bytes).
    let mut tails: Vec<(Arc<dyn StorageFile>, u64, Vec<u8>)> = Vec::new();
    let budget = config.group_commit_bytes_max as u64;
    for (position_in_list, name) in names.iter().enumerate() {
        let file_name = storage.describe(name);
        let expected_index = position_in_list as u32;
        if segment_index_from_name(name) != Some(expected_index) {
            return Err(OpenError::Corrupt {
                file: file_name,
                offset: 0,
                reason: format!(
                    "unexpected segment file name; segment {} is missing or misnamed",
                    segment_name(expected_index)
                ),
            });
        }
        let file = storage.open(name).map_err(io_error(file_name.clone()))?;
        let is_last = position_in_list + 1 == names.len();
        let segment = SegmentScan {
            file_name: &file_name,
            file: &*file,
            segment_index: expected_index,
            is_last,
        };
        let (tail, tail_start, tail_bytes) = segment.scan(&mut recovered, budget)?;
        tails.push((file.clone(), tail_start, tail_bytes));
        // Older segments are needed only while the newer ones hold less than a group.
        while tails.len() > 1 && tails[1..].iter().map(|t| t.2.len() as u64).sum::<u64>() >= budget
        {
            tails.remove(0);
        }
        recovered.segments.push(file);
        if is_last {
            recovered.tail_offset = Some(tail);
        }
    }
    persist_tail(storage, &names, &tails, budget)?;
    if let (Some(tail), Some(file)) = (recovered.tail_offset, recovered.segments.last()) {
        let name = storage.describe(names.last().expect("a last segment"));
        persist_zeros_after(&**file, tail, budget)
            .map_err(|source| OpenError::Io { file: name, source })?;
    }
    Ok(recovered)
}

/// Writes zeros over the `budget` bytes after the last segment's tail and syncs them. A
/// torn write leaves garbage only there (it began at the tail and was at most one group),
/// and the zeros recovery wrote over it may not be durable: if the sync after them
/// failed, they read back as zeros while the disk still holds the garbage (fsyncgate), and
/// a later torn write on top would look like damage at rest and keep the log from
/// opening. Writing them again on every open makes them durable whatever the cache says.
fn persist_zeros_after(file: &dyn StorageFile, tail: u64, budget: u64) -> std::io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let end = tail.saturating_add(budget).min(file.size_bytes()?);
    if end <= tail {
        return Ok(());
    }
    let zeros = vec![0u8; (end - tail).min(CHUNK) as usize];
    let mut offset = tail;
    while offset < end {
        let length = (end - offset).min(CHUNK) as usize;
        file.write_all_at(&zeros[..length], offset)?;
        offset += length as u64;
    }
    file.sync_data()
}

/// `end`, and the last `keep` bytes of records before it with their offset.
fn tail_of(bytes: &[u8], end: u64, keep: u64) -> (u64, u64, Vec<u8>) {
    let start = end.saturating_sub(keep).max(SEGMENT_HEADER_BYTES).min(end);
    (end, start, bytes[start as usize..end as usize].to_vec())
}

/// Writes the last `budget` bytes of accepted records again and syncs them (see the module
/// documentation). `tails` holds each recent segment's verified end bytes, oldest first.
fn persist_tail(
    storage: &dyn Storage,
    names: &[String],
    tails: &[(Arc<dyn StorageFile>, u64, Vec<u8>)],
    mut budget: u64,
) -> Result<(), OpenError> {
    let first_name = names.len() - tails.len();
    for (index, (file, start, bytes)) in tails.iter().enumerate().rev() {
        if budget == 0 {
            break;
        }
        let skip = (bytes.len() as u64).saturating_sub(budget) as usize;
        if skip == bytes.len() {
            continue;
        }
        file.write_all_at(&bytes[skip..], start + skip as u64)
            .and_then(|()| file.sync_data())
            .map_err(|source| OpenError::Io {
                file: storage.describe(&names[first_name + index]),
                source,
            })?;
        budget -= (bytes.len() - skip) as u64;
    }
    Ok(())
}

struct SegmentScan<'a> {
    file_name: &'a str,
    file: &'a dyn StorageFile,
    segment_index: u32,
    is_last: bool,
}

impl SegmentScan<'_> {
    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> OpenError {
        OpenError::Corrupt {
            file: self.file_name.to_owned(),
            offset,
            reason: reason.into(),
        }
    }

    fn io(&self, source: std::io::Error) -> OpenError {
        OpenError::Io {
            file: self.file_name.to_owned(),
            source,
        }
    }

    /// Applies the segment's records to `recovered`; returns the offset after the last one,
    /// and the last `keep` bytes of records before it with their offset.
    fn scan(&self, recovered: &mut Recovered, keep: u64) -> Result<(u64, u64, Vec<u8>), OpenError> {
        let length = self.file.size_bytes().map_err(|e| self.io(e))?;
        let mut bytes = vec![0u8; length as usize];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| self.io(e))?;
        let header = format::decode_segment_header(&bytes)
            .map_err(|e| self.corrupt(0, format!("segment header: {e}")))?;
        if header.index != self.segment_index {
            return Err(self.corrupt(
                12,
                format!(
                    "header names segment {} but the file is segment {}",
                    header.index, self.segment_index
                ),
            ));
        }
        if header.first_position.0 != recovered.index.event_count() {
            return Err(self.corrupt(
                16,
                format!(
                    "segment starts at {} but the previous segments end at position {}",
                    header.first_position,
                    recovered.index.event_count()
                ),
            ));
        }
        if header.segment_bytes != length {
            return Err(self.corrupt(
                24,
                format!(
                    "header says {} bytes but the file has {length}",
                    header.segment_bytes
                ),
            ));
        }
        let mut offset = SEGMENT_HEADER_BYTES;
        loop {
            match self.next_record(&bytes, offset, recovered) {
                Ok(Some(next)) => offset = next,
                Ok(None) => break,
                Err(damage) => {
                    let end = self.handle_damage(&bytes, offset, &damage)?;
                    recovered.torn_tails_cut += 1;
                    return Ok(tail_of(&bytes, end, keep));
                }
            }
        }
        // A clean end: everything after should be zero. Non-zero bytes there are garbage
        // from an unacknowledged write or damage at rest; a valid record there is not.
        self.ensure_nothing_valid_after(&bytes, offset, "the end of the written data")?;
        if self.is_last {
            self.zero_garbage(&bytes, offset)?;
        }
        Ok(tail_of(&bytes, offset, keep))
    }

    /// Reads the record at `offset`. `Ok(None)` at the end of the data.
    fn next_record(
        &self,
        bytes: &[u8],
        offset: u64,
        recovered: &mut Recovered,
    ) -> Result<Option<u64>, String> {
        let start = offset as usize;
        let Some(header_bytes) = bytes.get(start..start + RECORD_HEADER_BYTES) else {
            return Ok(None); // no room for another record
        };
        if format::is_end_marker(header_bytes) {
            return Ok(None);
        }
        let header = format::decode_record_header(
            header_bytes.try_into().expect("header length"),
            bytes.len() as u64,
        )
        .map_err(|e| e.to_string())?;
        let end = start + header.total_bytes();
        let record = bytes
            .get(start..end)
            .ok_or_else(|| FormatError::Truncated.to_string())?;
        let body = format::verify_record(record).map_err(|e| e.to_string())?;
        let location = Location {
            segment: self.segment_index,
            offset: offset as u32,
            record_bytes: header.total_bytes() as u32,
            event_index: 0,
        };
        if header.kind == KIND_APPEND {
            apply_append_record(body, location, recovered)?;
        } else {
            apply_snapshot_record(body, location, recovered)?;
        }
        Ok(Some(end as u64))
    }

    fn handle_damage(&self, bytes: &[u8], offset: u64, damage: &str) -> Result<u64, OpenError> {
        if !self.is_last {
            return Err(self.corrupt(
                offset,
                format!("damaged record ({damage}) in a segment that later segments follow"),
            ));
        }
        self.ensure_nothing_valid_after(bytes, offset, &format!("a damaged record ({damage})"))?;
        // Cutting a torn tail is irreversible; decide it on two reads, so a transient read
        // fault cannot pass an acknowledged record off as torn.
        let mut again = vec![0u8; bytes.len() - offset as usize];
        self.file
            .read_exact_at(&mut again, offset)
            .map_err(|e| self.io(e))?;
        if again != bytes[offset as usize..] {
            return Err(self.io(std::io::Error::other(format!(
                "two reads from offset {offset} disagree: a transient read fault; not deciding whether the record there is torn"
            ))));
        }
        // A torn write persists a prefix of the last group: past the torn record's extent
        // lies nothing. The extent is the header's length when the header's own checksum
        // vouches for it, else just the header — so a damaged length can never make a
        // damaged record swallow the records after it.
        let start = offset as usize;
        let header_bytes = bytes
            .get(start..start + RECORD_HEADER_BYTES)
            .and_then(|h| <&[u8; RECORD_HEADER_BYTES]>::try_from(h).ok());
        let vouched = header_bytes
            .and_then(|h| format::decode_record_header(h, bytes.len() as u64).ok())
            .map(|h| h.total_bytes());
        let extent = vouched.unwrap_or(RECORD_HEADER_BYTES);
        let extent_end = (start + extent).min(bytes.len());
        // A write puts the record's trailer down last, and every trailer byte is non-zero:
        // a record whose last byte is there was written whole, so its damage came at rest.
        if vouched.is_some() && start + extent <= bytes.len() && bytes[extent_end - 1] != 0 {
            return Err(self.corrupt(
                offset,
                format!(
                    "damaged record ({damage}) written whole (its trailer ends at offset {extent_end}): damage at rest, not a torn write"
                ),
            ));
        }
        if let Some(nonzero) = bytes[extent_end..].iter().position(|&b| b != 0) {
            return Err(self.corrupt(
                offset,
                format!(
                    "damaged record ({damage}) followed by more data at offset {}; a torn write leaves nothing after itself",
                    extent_end + nonzero
                ),
            ));
        }
        // A torn tail: the last write, never acknowledged. Zero it so it cannot be misread.
        self.zero_garbage(bytes, offset)?;
        Ok(offset)
    }

    /// Refuses to open if a valid record lies at or after `offset + RECORD_ALIGN`.
    fn ensure_nothing_valid_after(
        &self,
        bytes: &[u8],
        offset: u64,
        what: &str,
    ) -> Result<(), OpenError> {
        // A record starts with its non-zero magic: none can start past the last non-zero byte.
        let written = crate::storage::last_nonzero(bytes).map_or(0, |last| last + 1);
        let mut candidate = offset as usize + RECORD_ALIGN;
        while candidate < written && candidate + RECORD_HEADER_BYTES <= bytes.len() {
            let magic =
                u32::from_le_bytes(bytes[candidate..candidate + 4].try_into().expect("4 bytes"));
            if magic == RECORD_MAGIC && format::verify_record(&bytes[candidate..]).is_ok() {
                return Err(self.corrupt(
                    offset,
                    format!("{what}, yet a valid record follows at offset {candidate}"),
                ));
            }
            candidate += RECORD_ALIGN;
        }
        Ok(())
    }

    fn zero_garbage(&self, bytes: &[u8], offset: u64) -> Result<(), OpenError> {
        let start = offset as usize;
        let Some(last_nonzero) = crate::storage::last_nonzero(&bytes[start..]) else {
            return Ok(());
        };
        let zeros = vec![0u8; last_nonzero + 1];
        self.file
            .write_all_at(&zeros, offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.io(e))
    }
}

fn apply_append_record(
    body: &[u8],
    location: Location,
    recovered: &mut Recovered,
) -> Result<(), String> {
    let record = format::decode_append(body).map_err(|e| e.to_string())?;
    let index = &mut recovered.index;
    if record.first_position.0 != index.event_count() {
        return Err(format!(
            "record starts at {} but the log so far ends at position {}",
            record.first_position,
            index.event_count()
        ));
    }
    let expected_version = index.current_version(&record.stream).next_version();
    if record.first_version != expected_version {
        return Err(format!(
            "record puts {} at {} but that stream's next version is {}",
            record.stream, record.first_version, expected_version
        ));
    }
    // The same pure check the writer ran; it also proves event ids are unique.
    match index.check_append(&record.stream, ExpectedVersion::Any, &record.events, None) {
        Ok(AppendPlan::Write { .. }) => {}
        Ok(AppendPlan::AlreadyWritten(_)) => {
            return Err("record repeats events already in the log".into());
        }
        Err(error) => return Err(format!("record fails the append check: {error}")),
    }
    index.apply_append(&record.stream, &record.events, record.first_position);
    for event_index in 0..record.events.len() {
        recovered.locations.push(Location {
            event_index: event_index as u32,
            ..location
        });
    }
    Ok(())
}

fn apply_snapshot_record(
    body: &[u8],
    location: Location,
    recovered: &mut Recovered,
) -> Result<(), String> {
    let record = format::decode_snapshot(body).map_err(|e| e.to_string())?;
    let current = recovered.index.current_version(&record.stream);
    let in_stream = matches!(
        current,
        crate::core::types::CurrentVersion::Current(v) if record.snapshot.version <= v
    );
    if !in_stream {
        return Err(format!(
            "snapshot of {} at {} but the stream is at {current}",
            record.stream, record.snapshot.version
        ));
    }
    let slot = SnapshotSlot {
        version: record.snapshot.version,
        location,
    };
    let existing = recovered.snapshots.get(&record.stream).map(|s| s.version);
    if crate::store::snapshot_replaces(existing, slot.version) {
        recovered.snapshots.insert(record.stream, slot);
    }
    Ok(())
}

//! Crash consistency of the durable log (DESIGN §2.2, I2, I10).
//!
//! Method: write K appends through the real log onto the simulated disk, then damage the
//! bytes — cut them at an arbitrary offset, overwrite arbitrary bytes, crash with unsynced
//! writes dropped or torn, fail a sync, flip a bit on read — and reopen. The oracle is the
//! list of appends that lie wholly before the damage: the reopened log must hold exactly
//! those (a cut or a damaged *last* record), or refuse to open naming file and offset. It
//! must never hold an invented or altered event and never skip one in the middle.

mod support;

use std::sync::Arc;

use evsource::core::{EventData, ExpectedVersion, GlobalPosition, Limits, RecordedEvent};
use evsource::storage::{SimDisk, SimDiskFaults};
use evsource::store::{AppendError, EventStore, LogConfig, LogStore, OpenError, ReadError};
use proptest::prelude::*;
use support::{TempDir, event, stream};

const SEGMENT: &str = "0000000000.evlog";

fn config() -> LogConfig {
    LogConfig {
        limits: Limits {
            append_bytes_max: 8 * 1024,
            events_per_append_max: 16,
            payload_bytes_max: 2 * 1024,
            snapshot_bytes_max: 8 * 1024,
            ..Limits::default()
        },
        segment_bytes: 32 * 1024,
        group_commit_bytes_max: 64 * 1024,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Appends `sizes.len()` appends of `sizes[i]` events each; returns their events.
fn write_appends(
    runtime: &tokio::runtime::Runtime,
    store: &LogStore,
    sizes: &[usize],
) -> Vec<Vec<EventData>> {
    let mut next_id = 1u128;
    let mut appends = Vec::new();
    for (index, &size) in sizes.iter().enumerate() {
        let batch: Vec<EventData> = (0..size)
            .map(|_| {
                next_id += 1;
                event(next_id)
            })
            .collect();
        let target = stream(&format!("s{}", index % 3));
        runtime
            .block_on(store.append(&target, ExpectedVersion::Any, batch.clone()))
            .expect("append");
        appends.push(batch);
    }
    appends
}

fn read_everything(runtime: &tokio::runtime::Runtime, store: &LogStore) -> Vec<RecordedEvent> {
    runtime
        .block_on(store.read_all(GlobalPosition(0), usize::MAX))
        .expect("read")
}

/// The ids the reopened log must hold when exactly the first `whole` appends survive.
fn ids_of_first(appends: &[Vec<EventData>], whole: usize) -> Vec<u128> {
    appends[..whole].iter().flatten().map(|e| e.id.0).collect()
}

/// `(body end, record end)` of each append record in the first segment; the record
/// ends with its padding and its 8-byte trailer.
fn record_ends(disk: &SimDisk, appends: usize) -> Vec<(usize, usize)> {
    let bytes = disk.file_bytes(SEGMENT).expect("segment");
    let mut ends = Vec::new();
    let mut offset = 64usize;
    for _ in 0..appends {
        let body_len =
            u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
        let body_end = offset + 24 + body_len;
        offset += (24 + body_len).next_multiple_of(8) + 8;
        assert_eq!(
            &bytes[offset - 8..offset],
            b"EvR1.end",
            "the trailer ends the record"
        );
        ends.push((body_end, offset));
    }
    ends
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A log cut at any byte reopens to exactly the appends wholly before the cut.
    #[test]
    fn a_cut_keeps_exactly_the_whole_records_before_it(
        sizes in prop::collection::vec(1usize..4, 1..12),
        cut_fraction in 0.0f64..1.0,
        cut_by_truncation in any::<bool>(),
    ) {
        let runtime = runtime();
        let disk = SimDisk::new();
        let store = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
        let appends = write_appends(&runtime, &store, &sizes);
        drop(store);
        let ends = record_ends(&disk, appends.len());
        let data_end = ends.last().unwrap().1;
        let cut = 64 + ((data_end - 64) as f64 * cut_fraction) as usize;
        let mut bytes = disk.file_bytes(SEGMENT).unwrap();
        if cut_by_truncation {
            // The header still says how long the file is: a shorter file is damage.
            bytes.truncate(cut);
        } else {
            bytes[cut..].fill(0);
        }
        disk.set_file_bytes(SEGMENT, bytes);
        // A record is whole when its trailer, the last byte its write puts down, is.
        let whole = ends.iter().filter(|&&(_, record_end)| record_end <= cut).count();
        match LogStore::open(Arc::new(disk.clone()), config()) {
            Ok(reopened) => {
                prop_assert!(!cut_by_truncation, "a truncated segment must be refused");
                let ids: Vec<u128> = read_everything(&runtime, &reopened).iter().map(|e| e.id.0).collect();
                prop_assert_eq!(ids, ids_of_first(&appends, whole));
            }
            Err(OpenError::Corrupt { file, offset, .. }) => {
                prop_assert!(cut_by_truncation, "a zeroed tail is a torn write, not corruption");
                prop_assert!(file.contains(SEGMENT));
                prop_assert_eq!(offset, 24, "the length field is named");
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    /// Arbitrary damaged bytes: the log reopens to the records before a damaged last record,
    /// or refuses naming file and offset — never a missing middle record or an altered one.
    #[test]
    fn damage_is_detected_never_misread(
        sizes in prop::collection::vec(1usize..4, 2..10),
        damage in prop::collection::vec((0.0f64..1.0, 1u8..=255), 1..4),
    ) {
        let runtime = runtime();
        let disk = SimDisk::new();
        let store = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
        let appends = write_appends(&runtime, &store, &sizes);
        let original = read_everything(&runtime, &store);
        drop(store);
        let ends = record_ends(&disk, appends.len());
        let data_end = ends.last().unwrap().1;
        let mut bytes = disk.file_bytes(SEGMENT).unwrap();
        let mut first_damaged = usize::MAX;
        for (fraction, xor) in &damage {
            let offset = (data_end as f64 * fraction) as usize;
            bytes[offset] ^= xor;
            first_damaged = first_damaged.min(offset);
        }
        disk.set_file_bytes(SEGMENT, bytes);
        match LogStore::open(Arc::new(disk.clone()), config()) {
            Ok(reopened) => {
                let recovered = read_everything(&runtime, &reopened);
                // Whatever survives is an unaltered prefix of what was written...
                prop_assert_eq!(&recovered[..], &original[..recovered.len()]);
                // ...and loses nothing: damage at rest in a record written whole is
                // refused, even in the last record. The one exception is damage that looks
                // exactly like a torn write — the last record's final byte zeroed.
                if recovered.len() < original.len() {
                    let last_end = ends[ends.len() - 1].1;
                    let zeroed_last_byte = damage.iter().any(|(fraction, xor)| {
                        (data_end as f64 * fraction) as usize == last_end - 1 && *xor == b'd'
                    });
                    prop_assert!(zeroed_last_byte, "damage at {first_damaged} cut acknowledged records");
                    prop_assert_eq!(recovered.len(), ids_of_first(&appends, appends.len() - 1).len());
                }
            }
            Err(OpenError::Corrupt { file, offset, reason }) => {
                prop_assert!(file.contains(SEGMENT), "error names the file: {file}");
                prop_assert!(offset <= first_damaged as u64 + 16, "offset {offset} ({reason}) is at or before the damage at {first_damaged}");
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    /// A crash drops unsynced writes (or keeps a torn prefix of them): every acknowledged
    /// append survives, and the log stays appendable.
    #[test]
    fn acknowledged_appends_survive_a_crash(
        sizes in prop::collection::vec(1usize..4, 1..10),
        kept_unsynced in 0u64..600,
    ) {
        let runtime = runtime();
        let disk = SimDisk::new();
        let store = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
        let appends = write_appends(&runtime, &store, &sizes);
        // An append whose sync fails is not acknowledged; its bytes are unsynced.
        disk.set_faults(SimDiskFaults { fail_syncs: true, ..SimDiskFaults::default() });
        let unacknowledged = runtime.block_on(store.append(&stream("late"), ExpectedVersion::Any, vec![event(1_000_000)]));
        prop_assert!(matches!(unacknowledged, Err(AppendError::OutcomeUnknown(_))));
        drop(store);
        disk.set_faults(SimDiskFaults::default());
        disk.crash(kept_unsynced);
        let reopened = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
        let ids: Vec<u128> = read_everything(&runtime, &reopened).iter().map(|e| e.id.0).collect();
        let acknowledged = ids_of_first(&appends, appends.len());
        prop_assert_eq!(&ids[..acknowledged.len()], &acknowledged[..]);
        prop_assert!(ids.len() == acknowledged.len() || ids[acknowledged.len()..] == [1_000_000]);
        runtime.block_on(reopened.append(&stream("after"), ExpectedVersion::Any, vec![event(2_000_000)])).unwrap();
    }
}

/// A log with two acknowledged appends and a third (event 500) whose sync failed — its
/// outcome unknown — on `disk`, whose faults are cleared again.
fn store_after_a_failed_sync(runtime: &tokio::runtime::Runtime, disk: &SimDisk) -> LogStore {
    let store = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    write_appends(runtime, &store, &[1, 2]);
    disk.set_faults(SimDiskFaults {
        fail_syncs: true,
        ..SimDiskFaults::default()
    });
    let failed =
        runtime.block_on(store.append(&stream("x"), ExpectedVersion::Any, vec![event(500)]));
    assert!(
        matches!(failed, Err(AppendError::OutcomeUnknown(_))),
        "{failed:?}"
    );
    disk.set_faults(SimDiskFaults::default());
    store
}

/// fsyncgate: after a failed sync the kernel may drop the failed writes from its dirty
/// set, so they read back but never reach the disk. A process that restarts, reopens the
/// log and keeps appending must not build acknowledged events on bytes that a power loss
/// will take away: reopening makes what it accepted durable, and a crash afterwards loses
/// nothing that was acknowledged.
#[test]
fn after_a_failed_sync_a_restart_makes_what_it_reads_durable() {
    let runtime = runtime();
    let disk = SimDisk::new();
    let store = store_after_a_failed_sync(&runtime, &disk);
    drop(store);
    // The process restarts (the machine does not): the failed write still reads back.
    let restarted = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    assert_eq!(read_everything(&runtime, &restarted).len(), 4);
    runtime
        .block_on(restarted.append(&stream("y"), ExpectedVersion::Any, vec![event(600)]))
        .expect("acknowledged");
    drop(restarted);
    // Power loss: everything acknowledged must still be there, and the log must open.
    disk.crash(0);
    let reopened = LogStore::open(Arc::new(disk.clone()), config())
        .expect("no hole under acknowledged events");
    let ids: Vec<u128> = read_everything(&runtime, &reopened)
        .iter()
        .map(|e| e.id.0)
        .collect();
    assert!(
        ids.contains(&600),
        "the acknowledged event survived: {ids:?}"
    );
    assert!(
        ids.contains(&500),
        "what the restart accepted was made durable: {ids:?}"
    );
}

/// fsyncgate at open: the zeros recovery writes over a torn tail are lost if the sync
/// after them fails, though they read back. The next open in the same process sees zeros
/// and accepts the log; if it did not make them durable, a power loss would bring the
/// torn record's bytes back past the records appended since — where a later torn write
/// would make the log refuse to open as damaged at rest. Every open writes the zeros after
/// the tail again, so the cut stays cut.
#[test]
fn zeros_over_a_torn_tail_are_made_durable_even_after_a_failed_sync_at_open() {
    let runtime = runtime();
    let disk = SimDisk::new();
    let store = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    let appends = write_appends(&runtime, &store, &[1, 1, 1]);
    // A fourth record over two pages, so that it reaches past what the next append's
    // page-padded write covers.
    let big: Vec<EventData> = (800..804)
        .map(|id| EventData {
            payload: vec![b'x'; 1_500],
            ..event(id)
        })
        .collect();
    runtime
        .block_on(store.append(&stream("big"), ExpectedVersion::Any, big))
        .expect("append");
    drop(store);
    let ends = record_ends(&disk, 4);
    assert!(ends[3].1 > 4096 + 1024, "the torn record spans pages");
    // The fourth record torn: its trailer's last byte never reached the disk.
    let mut bytes = disk.file_bytes(SEGMENT).expect("segment");
    bytes[ends[3].1 - 1] = 0;
    disk.set_file_bytes(SEGMENT, bytes);

    disk.set_faults(SimDiskFaults {
        fail_syncs: true,
        ..SimDiskFaults::default()
    });
    let failed = LogStore::open(Arc::new(disk.clone()), config());
    assert!(
        matches!(failed, Err(OpenError::Io { .. })),
        "cutting the torn tail needs a sync"
    );
    disk.set_faults(SimDiskFaults::default());
    // The same process opens again: the zeros read back, the log opens, appends go on.
    let reopened = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    runtime
        .block_on(reopened.append(&stream("after"), ExpectedVersion::Any, vec![event(900)]))
        .expect("acknowledged");
    drop(reopened);

    disk.crash(0);
    let after = disk.file_bytes(SEGMENT).expect("segment");
    let tail = record_ends(&disk, 4)[3].1;
    assert!(
        after[tail..].iter().all(|&b| b == 0),
        "the torn record's bytes came back after the power loss, at offset {}",
        tail + after[tail..].iter().position(|&b| b != 0).unwrap_or(0)
    );
    let after_power_loss = LogStore::open(Arc::new(disk.clone()), config())
        .expect("the log opens after the power loss");
    let ids: Vec<u128> = read_everything(&runtime, &after_power_loss)
        .iter()
        .map(|e| e.id.0)
        .collect();
    let mut expected = ids_of_first(&appends, 3);
    expected.push(900);
    assert_eq!(
        ids, expected,
        "the first three appends and the one after the cut"
    );
}

#[test]
fn a_failed_sync_poisons_the_log_until_it_is_reopened() {
    let runtime = runtime();
    let disk = SimDisk::new();
    let store = store_after_a_failed_sync(&runtime, &disk);
    let refused =
        runtime.block_on(store.append(&stream("x"), ExpectedVersion::Any, vec![event(501)]));
    assert!(
        matches!(refused, Err(AppendError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(
        read_everything(&runtime, &store).len(),
        3,
        "unacknowledged events are never read"
    );
    drop(store);
    // The unknown outcome resolves by retrying the same ids after reopening.
    let reopened = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    let retry = runtime
        .block_on(reopened.append(&stream("x"), ExpectedVersion::Any, vec![event(500)]))
        .unwrap();
    let all = read_everything(&runtime, &reopened);
    assert_eq!(
        all.iter().filter(|e| e.id.0 == 500).count(),
        1,
        "retry stored it exactly once"
    );
    assert_eq!(retry.first_position, GlobalPosition(3));
}

#[test]
fn a_bit_flipped_on_read_is_reported_with_file_and_offset() {
    let runtime = runtime();
    let disk = SimDisk::new();
    let store = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    write_appends(&runtime, &store, &[1, 1, 1]);
    let ends = record_ends(&disk, 3);
    disk.set_faults(SimDiskFaults {
        flip_on_read: Some((SEGMENT.into(), ends[0].1 as u64 + 40)),
        ..SimDiskFaults::default()
    });
    let error = runtime
        .block_on(store.read_all(GlobalPosition(0), 10))
        .unwrap_err();
    match error {
        ReadError::Corrupt { file, offset, .. } => {
            assert!(file.contains(SEGMENT));
            assert_eq!(offset, ends[0].1 as u64, "the damaged record's offset");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // The first record is intact and still readable.
    assert_eq!(
        runtime
            .block_on(store.read_all(GlobalPosition(0), 1))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_damaged_middle_record_refuses_to_open_and_changes_nothing() {
    let runtime = runtime();
    let disk = SimDisk::new();
    let store = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    write_appends(&runtime, &store, &[2, 2, 2, 2]);
    drop(store);
    let ends = record_ends(&disk, 4);
    let mut bytes = disk.file_bytes(SEGMENT).unwrap();
    bytes[ends[0].1 + 30] ^= 0x40;
    disk.set_file_bytes(SEGMENT, bytes.clone());
    let error = LogStore::open(Arc::new(disk.clone()), config()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(SEGMENT) && message.contains(&format!("offset {}", ends[0].1)),
        "{message}"
    );
    assert_eq!(
        disk.file_bytes(SEGMENT).unwrap(),
        bytes,
        "a refused open writes nothing"
    );
}

/// Appends roll over many segments — each after the first made ready ahead as a spare
/// while its predecessor filled — and all survive reopening: the directory holds
/// consecutive full-size segments and at most the one spare being prepared, which no open
/// keeps.
/// Rollover on real files, with segments a whole number of pages long (zero-filled around
/// the page cache where the file system allows it, every write padded to a page) and with
/// segments that are not (filled through the cache; the padding must stop at the end).
#[test]
fn appends_roll_over_segments_and_survive_reopening_on_a_real_directory() {
    for segment_bytes in [32 * 1024, 32 * 1024 + 100] {
        rollover_on_a_real_directory(LogConfig {
            segment_bytes,
            ..config()
        });
    }
}

fn rollover_on_a_real_directory(config: LogConfig) {
    let runtime = runtime();
    let dir = TempDir::new(&format!("rollover-{}", config.segment_bytes));
    let store = LogStore::open_dir(dir.path(), config.clone()).unwrap();
    // ~200 KiB of events: six 32-KiB segments and more.
    let events = 200u128;
    let mut expected = Vec::new();
    for id in 0..events {
        let mut e = event(id + 1);
        e.payload = vec![id as u8; 1000];
        runtime
            .block_on(store.append(&stream("big"), ExpectedVersion::Any, vec![e.clone()]))
            .unwrap();
        expected.push(e);
    }
    drop(store);
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let (spares, segments): (Vec<String>, Vec<String>) =
        names().into_iter().partition(|name| name.ends_with(".tmp"));
    assert!(
        segments.len() >= 6,
        "expected rollovers, found {segments:?}"
    );
    for (index, name) in segments.iter().enumerate() {
        assert_eq!(name, &format!("{index:010}.evlog"));
        let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert_eq!(len, config.segment_bytes, "{name} is not full size");
    }
    assert!(
        spares.len() <= 1
            && spares
                .iter()
                .all(|s| s == &format!("{:010}.evlog.tmp", segments.len())),
        "only the next segment may be waiting as a spare: {spares:?}"
    );
    let reopened = LogStore::open_dir(dir.path(), config.clone()).unwrap();
    assert!(names().iter().all(|name| !name.ends_with(".tmp")));
    let all = read_everything(&runtime, &reopened);
    assert_eq!(all.len(), events as usize);
    for (recorded, written) in all.iter().zip(&expected) {
        assert_eq!(
            (recorded.id, &recorded.payload),
            (written.id, &written.payload)
        );
    }
    let next = runtime
        .block_on(reopened.append(&stream("big"), ExpectedVersion::Any, vec![event(999)]))
        .unwrap();
    assert_eq!(next.first_position, GlobalPosition(events as u64));
}

#[test]
fn an_unknown_format_version_is_refused_by_name() {
    let disk = SimDisk::new();
    let mut header = vec![0u8; 32 * 1024];
    header[0..8].copy_from_slice(b"EVSRCLOG");
    header[8..12].copy_from_slice(&9u32.to_le_bytes());
    header[24..32].copy_from_slice(&(32u64 * 1024).to_le_bytes());
    let crc = crc32(&header[0..32]);
    header[32..36].copy_from_slice(&crc.to_le_bytes());
    disk.set_file_bytes(SEGMENT, header);
    let message = LogStore::open(Arc::new(disk), config())
        .unwrap_err()
        .to_string();
    assert!(message.contains("format version 9"), "{message}");
}

/// CRC-32 (IEEE), bit by bit: an independent check of the header the log writes.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn concurrent_appenders_share_syncs() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let disk = SimDisk::new();
    let store = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    let appenders = 64u128;
    let syncs_before = disk.stats().syncs;
    runtime.block_on(async {
        let tasks: Vec<_> = (0..appenders)
            .map(|id| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append(
                            &stream(&format!("s{id}")),
                            ExpectedVersion::NoStream,
                            vec![event(id + 1)],
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    });
    let syncs = disk.stats().syncs - syncs_before;
    assert_eq!(read_everything(&runtime, &store).len(), appenders as usize);
    assert!(
        syncs < appenders as u64,
        "{syncs} syncs for {appenders} appends: no group commit"
    );
}

/// A transient read fault at open, on the last record: indistinguishable from a torn
/// write on one read. Recovery decides on two reads, so it refuses this once (with the file
/// and offset) instead of cutting an acknowledged record, and the next open keeps it.
#[test]
fn a_transient_read_fault_on_the_last_record_does_not_cut_it() {
    let runtime = runtime();
    let disk = SimDisk::new();
    let store = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    write_appends(&runtime, &store, &[1, 1, 1]);
    drop(store);
    let ends = record_ends(&disk, 3);
    disk.set_faults(SimDiskFaults {
        flip_next_read: Some((SEGMENT.into(), ends[1].1 as u64 + 30)),
        ..SimDiskFaults::default()
    });
    let Err(refused) = LogStore::open(Arc::new(disk.clone()), config()) else {
        panic!("refused while two reads disagree");
    };
    let message = refused.to_string();
    assert!(
        message.contains(SEGMENT) && message.contains("transient read fault"),
        "{message}"
    );
    let reopened = LogStore::open(Arc::new(disk.clone()), config()).unwrap();
    assert_eq!(
        read_everything(&runtime, &reopened).len(),
        3,
        "the acknowledged last record was kept"
    );
}

/// Every length the log encodes has a field of fixed width (u16 for strings and the tag
/// count, u32 for payloads, snapshot states and events per append): a limit wider than
/// its field is refused at open, naming it, before anything is written — never a record
/// whose checksum passes and whose framing is wrong.
#[test]
fn each_limit_wider_than_its_field_is_refused_at_open() {
    let u16_wide = usize::from(u16::MAX) + 1;
    let u32_wide = u32::MAX as usize + 1;
    type SetLimit = fn(&mut Limits, usize);
    let cases: [(&str, SetLimit, usize); 7] = [
        (
            "stream_id_bytes_max",
            |l, v| l.stream_id_bytes_max = v,
            u16_wide,
        ),
        (
            "event_type_bytes_max",
            |l, v| l.event_type_bytes_max = v,
            u16_wide,
        ),
        ("tag_bytes_max", |l, v| l.tag_bytes_max = v, u16_wide),
        (
            "tags_per_event_max",
            |l, v| l.tags_per_event_max = v,
            u16_wide,
        ),
        (
            "payload_bytes_max",
            |l, v| l.payload_bytes_max = v,
            u32_wide,
        ),
        (
            "events_per_append_max",
            |l, v| l.events_per_append_max = v,
            u32_wide,
        ),
        (
            "snapshot_bytes_max",
            |l, v| l.snapshot_bytes_max = v,
            u32_wide,
        ),
    ];
    for (name, set, value) in cases {
        let disk = SimDisk::new();
        let mut config = config();
        set(&mut config.limits, value);
        match LogStore::open(Arc::new(disk.clone()), config) {
            Err(OpenError::Config(reason)) => assert!(reason.contains(name), "{name}: {reason}"),
            Err(other) => panic!("{name}: {other}"),
            Ok(_) => panic!("{name} = {value} was accepted"),
        }
        assert!(disk.file_names().is_empty(), "{name}: nothing written");
        // One less fits its field (the other checks may still refuse it, never this one).
        let mut config = self::config();
        set(&mut config.limits, value - 1);
        if let Err(OpenError::Config(reason)) = LogStore::open(Arc::new(SimDisk::new()), config) {
            assert!(!reason.contains("field"), "{name}: {reason}");
        }
    }
}

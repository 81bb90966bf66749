//! The durable log's replay path (`visit_stream`) on a stream long enough that it reads
//! records ahead on a second thread. Method: write a multi-megabyte stream interleaved with
//! another stream through the real log onto the simulated disk; the oracle is the owned
//! read (`read_stream`). The visit must see exactly those events from any version, stop at
//! a break, and report a bit flipped in a record deep in the stream as corruption naming
//! the file — having handed the visitor nothing from that record.

use std::ops::ControlFlow;
use std::sync::Arc;

use evsource::core::{
    CommandId, EventData, EventId, ExpectedVersion, Metadata, StreamId, StreamVersion,
};
use evsource::storage::{SimDisk, SimDiskFaults};
use evsource::store::{EventStore, LogConfig, LogStore, ReadError};

const SEGMENT: &str = "0000000000.evlog";
const APPENDS: u128 = 700;
const EVENTS_PER_APPEND: u128 = 16;
const PAYLOAD_BYTES: usize = 480;

/// A payload that names its event, so the test can find the event's bytes on the disk.
fn marker(id: u128) -> Vec<u8> {
    let mut payload = format!("<event {id:08}>").into_bytes();
    payload.resize(PAYLOAD_BYTES, b'.');
    payload
}

fn event(id: u128) -> EventData {
    EventData {
        id: EventId(id),
        event_type: format!("Type{}", id % 4),
        tags: Vec::new(),
        metadata: Metadata {
            command_id: Some(CommandId(id / EVENTS_PER_APPEND)),
            recorded_at_millis: id as u64,
            ..Metadata::default()
        },
        payload: marker(id),
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid")
}

/// The long stream `big` (APPENDS × EVENTS_PER_APPEND events, ids from 1) with a one-event
/// append to `other` after each of its appends.
async fn long_stream() -> (SimDisk, LogStore) {
    let disk = SimDisk::new();
    let store = LogStore::open(Arc::new(disk.clone()), LogConfig::default()).expect("open");
    for append in 0..APPENDS {
        let first = 1 + append * EVENTS_PER_APPEND;
        let batch = (first..first + EVENTS_PER_APPEND).map(event).collect();
        store
            .append(&stream("big"), ExpectedVersion::Any, batch)
            .await
            .expect("append");
        store
            .append(
                &stream("other"),
                ExpectedVersion::Any,
                vec![event(1_000_000 + append)],
            )
            .await
            .expect("append");
    }
    let written = disk.written_len(SEGMENT).expect("segment");
    assert!(
        written > 5 * 1024 * 1024,
        "long enough to read ahead: {written} bytes"
    );
    (disk, store)
}

type Seen = (StreamVersion, EventId, String, Vec<u8>, Metadata);

async fn owned_reads(store: &LogStore) -> Vec<Seen> {
    let mut seen = Vec::new();
    loop {
        let page = store
            .read_stream(&stream("big"), StreamVersion(seen.len() as u64), 1000)
            .await
            .expect("read");
        if page.is_empty() {
            return seen;
        }
        seen.extend(
            page.into_iter()
                .map(|e| (e.version, e.id, e.event_type, e.payload, e.metadata)),
        );
    }
}

#[tokio::test]
async fn a_long_replay_sees_what_reads_see_and_stops_at_a_break() {
    let (_disk, store) = long_stream().await;
    let owned = owned_reads(&store).await;
    assert_eq!(owned.len() as u128, APPENDS * EVENTS_PER_APPEND);
    for from in [0usize, 5, 4321, owned.len() - 1] {
        let mut seen: Vec<Seen> = Vec::new();
        let count = store
            .visit_stream(&stream("big"), StreamVersion(from as u64), |view| {
                seen.push((
                    view.version,
                    view.id,
                    view.event_type.to_owned(),
                    view.payload.to_vec(),
                    view.metadata(),
                ));
                ControlFlow::Continue(())
            })
            .await
            .expect("visit");
        assert_eq!(count as usize, owned.len() - from);
        assert!(seen == owned[from..], "the visit from {from} differs");
    }
    let mut seen = 0u64;
    let count = store
        .visit_stream(&stream("big"), StreamVersion(0), |_| {
            seen += 1;
            if seen == 7000 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .expect("visit");
    assert_eq!((count, seen), (7000, 7000));
}

#[tokio::test]
async fn a_flipped_bit_deep_in_a_long_replay_is_corruption_and_nothing_of_its_record_is_seen() {
    let (disk, store) = long_stream().await;
    let damaged_id = 9_000u128;
    let bytes = disk.file_bytes(SEGMENT).expect("segment");
    let needle = format!("<event {damaged_id:08}>").into_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|window| window == needle.as_slice())
        .expect("the event's payload is on the disk") as u64;
    disk.set_faults(SimDiskFaults {
        flip_on_read: Some((SEGMENT.into(), at)),
        ..SimDiskFaults::default()
    });
    // The damaged record holds events 8993..=9008 (the 562nd append of 16).
    let record_first = damaged_id - (damaged_id - 1) % EVENTS_PER_APPEND;
    let mut highest_seen = 0u128;
    let result = store
        .visit_stream(&stream("big"), StreamVersion(0), |view| {
            highest_seen = highest_seen.max(view.id.0);
            ControlFlow::Continue(())
        })
        .await;
    match result {
        Err(ReadError::Corrupt { file, offset, .. }) => {
            assert!(file.contains(SEGMENT), "names the file: {file}");
            assert!(
                offset < at,
                "the record's offset {offset} precedes the flipped byte {at}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(
        highest_seen,
        record_first - 1,
        "every record before the damaged one was seen, nothing of it"
    );
}

//! Model-based test of the store contract: random sequences of appends (fresh, conflicting,
//! exact retries and partial overlaps), reads and reopenings are applied both to a real
//! backend and to a deliberately naive reference model written here with linear scans
//! (sharing no code with the store's index). Any divergence in a result or a read fails.

mod support;

use std::sync::Arc;

use evsource::core::{
    AppendResult, CurrentVersion, EventData, ExpectedVersion, GlobalPosition, Limits, StreamVersion,
};
use evsource::storage::SimDisk;
use evsource::store::{AppendError, EventStore, LogConfig, LogStore, MemoryStore, ReadError};
use proptest::prelude::*;
use support::{event, stream};

const STREAMS: [&str; 3] = ["s0", "s1", "s2"];

#[derive(Clone, Debug)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
}

#[derive(Clone, Debug)]
enum Op {
    /// A new append of `count` fresh events.
    Append {
        stream: usize,
        expect: Expect,
        count: usize,
    },
    /// Exactly repeat the `n`-th earlier append (modulo their number).
    Retry {
        n: usize,
    },
    /// Repeat the `n`-th earlier append's ids on some stream under some expectation.
    RetryWith {
        n: usize,
        stream: usize,
        expect: Expect,
    },
    /// Repeat the `n`-th earlier append's ids plus one fresh id.
    Overlap {
        n: usize,
    },
    ReadStream {
        stream: usize,
        from: u64,
    },
    ReadAll {
        from: u64,
    },
    /// Crash (nothing unsynced is pending: every append was answered) and reopen.
    Reopen,
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        Just(Expect::StreamExists),
        (0u64..6).prop_map(Expect::Exact),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..STREAMS.len(), expect_strategy(), 1usize..4)
            .prop_map(|(stream, expect, count)| Op::Append { stream, expect, count }),
        2 => any::<usize>().prop_map(|n| Op::Retry { n }),
        2 => (any::<usize>(), 0..STREAMS.len(), expect_strategy())
            .prop_map(|(n, stream, expect)| Op::RetryWith { n, stream, expect }),
        1 => any::<usize>().prop_map(|n| Op::Overlap { n }),
        2 => (0..STREAMS.len(), 0u64..6).prop_map(|(stream, from)| Op::ReadStream { stream, from }),
        1 => (0u64..20).prop_map(|from| Op::ReadAll { from }),
        1 => Just(Op::Reopen),
    ]
}

impl Expect {
    fn to_store(&self) -> ExpectedVersion {
        match self {
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::StreamExists => ExpectedVersion::StreamExists,
            Expect::Exact(v) => ExpectedVersion::Exact(StreamVersion(*v)),
        }
    }
}

/// What the model predicts for an append, compared with the store's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Ok(AppendResult),
    WrongVersion,
    DuplicateId,
}

/// The reference: a flat list of (stream, id), positions are indices.
#[derive(Default, Debug)]
struct Model {
    events: Vec<(usize, u128)>,
}

impl Model {
    fn stream_ids(&self, stream: usize) -> Vec<u128> {
        self.events
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, id)| *id)
            .collect()
    }

    fn append(&mut self, stream: usize, expect: &Expect, ids: &[u128]) -> Answer {
        let mut seen = Vec::new();
        for id in ids {
            if seen.contains(id) {
                return Answer::DuplicateId;
            }
            seen.push(*id);
        }
        let present = ids
            .iter()
            .filter(|id| self.events.iter().any(|(_, e)| e == *id))
            .count();
        let in_stream = self.stream_ids(stream);
        if present == ids.len() {
            // An exact retry: the ids sit contiguously, in order, in this stream...
            let Some(start) = in_stream.iter().position(|id| *id == ids[0]) else {
                return Answer::DuplicateId;
            };
            if in_stream.get(start..start + ids.len()) != Some(ids) {
                return Answer::DuplicateId;
            }
            // ...at a place the expectation admits.
            let fits = match expect {
                Expect::Any | Expect::StreamExists => true,
                Expect::NoStream => start == 0,
                Expect::Exact(v) => start as u64 == v + 1,
            };
            if !fits {
                return Answer::DuplicateId;
            }
            let position = self.events.iter().position(|(_, e)| *e == ids[0]).unwrap();
            return Answer::Ok(AppendResult {
                first_version: StreamVersion(start as u64),
                last_version: StreamVersion((start + ids.len() - 1) as u64),
                first_position: GlobalPosition(position as u64),
                written: false,
            });
        }
        if present > 0 {
            return Answer::DuplicateId;
        }
        let length = in_stream.len() as u64;
        let admitted = match expect {
            Expect::Any => true,
            Expect::NoStream => length == 0,
            Expect::StreamExists => length > 0,
            Expect::Exact(v) => length > 0 && *v == length - 1,
        };
        if !admitted {
            return Answer::WrongVersion;
        }
        let first_position = self.events.len() as u64;
        self.events.extend(ids.iter().map(|id| (stream, *id)));
        Answer::Ok(AppendResult {
            first_version: StreamVersion(length),
            last_version: StreamVersion(length + ids.len() as u64 - 1),
            first_position: GlobalPosition(first_position),
            written: true,
        })
    }
}

fn answer_of(result: Result<AppendResult, AppendError>) -> Answer {
    match result {
        Ok(result) => Answer::Ok(result),
        Err(AppendError::WrongExpectedVersion { .. }) => Answer::WrongVersion,
        Err(AppendError::DuplicateEventId { .. }) => Answer::DuplicateId,
        Err(other) => panic!("unexpected store error {other}"),
    }
}

/// Opens the log on `disk`, recovering whatever the disk holds.
fn open_log(disk: &SimDisk) -> LogStore {
    // Small segments, so that long cases also roll over to new segment files.
    let config = LogConfig {
        limits: Limits {
            append_bytes_max: 8 * 1024,
            events_per_append_max: 16,
            payload_bytes_max: 2 * 1024,
            snapshot_bytes_max: 8 * 1024,
            ..Limits::default()
        },
        segment_bytes: 4 * 1024 * 1024 / 128,
        group_commit_bytes_max: 64 * 1024,
    };
    LogStore::open(Arc::new(disk.clone()), config).expect("reopen")
}

fn run<S: EventStore>(
    ops: &[Op],
    mut store: S,
    mut reopen: impl FnMut(S) -> S,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut model = Model::default();
    let mut history: Vec<(usize, Expect, Vec<u128>)> = Vec::new();
    let mut next_id = 1u128;
    for (step, op) in ops.iter().enumerate() {
        let request = match op {
            Op::Append {
                stream,
                expect,
                count,
            } => {
                let ids: Vec<u128> = (0..*count as u128).map(|i| next_id + i).collect();
                next_id += *count as u128;
                Some((*stream, expect.clone(), ids))
            }
            Op::Retry { n } if !history.is_empty() => Some(history[n % history.len()].clone()),
            Op::RetryWith { n, stream, expect } if !history.is_empty() => {
                let (_, _, ids) = history[n % history.len()].clone();
                Some((*stream, expect.clone(), ids))
            }
            Op::Overlap { n } if !history.is_empty() => {
                let (stream, expect, mut ids) = history[n % history.len()].clone();
                ids.push(next_id);
                next_id += 1;
                Some((stream, expect, ids))
            }
            _ => None,
        };
        if let Some((target, expect, ids)) = request {
            let data: Vec<EventData> = ids.iter().map(|&id| event(id)).collect();
            let actual = answer_of(runtime.block_on(store.append(
                &stream(STREAMS[target]),
                expect.to_store(),
                data,
            )));
            let predicted = model.append(target, &expect, &ids);
            prop_assert_eq!(&actual, &predicted, "step {}: {:?}", step, op);
            history.push((target, expect, ids));
            continue;
        }
        match op {
            Op::ReadStream {
                stream: target,
                from,
            } => {
                let name = stream(STREAMS[*target]);
                let actual = runtime.block_on(store.read_stream(&name, StreamVersion(*from), 100));
                let expected_ids = model.stream_ids(*target);
                match actual {
                    Err(ReadError::StreamNotFound(_)) => {
                        prop_assert!(expected_ids.is_empty(), "step {}", step)
                    }
                    Err(other) => prop_assert!(false, "step {}: {}", step, other),
                    Ok(events) => {
                        let ids: Vec<u128> = events.iter().map(|e| e.id.0).collect();
                        let want: Vec<u128> =
                            expected_ids.iter().skip(*from as usize).copied().collect();
                        prop_assert_eq!(ids, want, "step {}", step);
                        for (offset, e) in events.iter().enumerate() {
                            prop_assert_eq!(e.version, StreamVersion(from + offset as u64));
                            prop_assert_eq!(&e.payload, &event(e.id.0).payload);
                        }
                    }
                }
                let version = runtime.block_on(store.current_version(&name)).unwrap();
                let want = match expected_ids.len() {
                    0 => CurrentVersion::NoStream,
                    n => CurrentVersion::Current(StreamVersion(n as u64 - 1)),
                };
                prop_assert_eq!(version, want, "step {}", step);
            }
            Op::ReadAll { from } => {
                let events = runtime
                    .block_on(store.read_all(GlobalPosition(*from), 100))
                    .unwrap();
                let got: Vec<(String, u128, u64)> = events
                    .iter()
                    .map(|e| (e.stream.to_string(), e.id.0, e.position.0))
                    .collect();
                let want: Vec<(String, u128, u64)> = model
                    .events
                    .iter()
                    .enumerate()
                    .skip(*from as usize)
                    .map(|(p, (s, id))| (STREAMS[*s].to_string(), *id, p as u64))
                    .collect();
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Reopen => store = reopen(store),
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_matches_the_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        // Memory has no durability: "reopen" keeps the same store.
        run(&ops, MemoryStore::default(), |store| store)?;
    }

    #[test]
    fn log_store_matches_the_model_across_crashes_and_reopening(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let disk = SimDisk::new();
        run(&ops, open_log(&disk), |old| {
            drop(old);
            // Everything was acknowledged, so a crash that drops unsynced writes loses nothing.
            disk.crash(0);
            open_log(&disk)
        })?;
    }
}

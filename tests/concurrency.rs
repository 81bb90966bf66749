//! Races, on real threads, against the memory store and the durable log: the version check
//! is atomic in the store (seed 003), optimistic concurrency plus retry keeps a balance
//! non-negative (seed 004, I6), a command id takes effect once (I8), and seats are never
//! double-booked either per show stream or across per-reservation streams (seed 002).
//! Tasks meet at a barrier before racing so that the race really happens.

mod support;

use std::sync::Arc;

use evsource::core::{CommandId, ExpectedVersion, StreamVersion};
use evsource::decider::Decider;
use evsource::domain::account::{Account, AccountCommand, AccountRejection};
use evsource::domain::seats::{
    CrossStreamError, Seats, SeatsCommand, SeatsEvent, SeatsRejection, reserve_across_streams,
};
use evsource::domain::station::{Station, StationCommand};
use evsource::environment::FixedEnvironment;
use evsource::handler::{CommandHandler, HandleError, HandlerConfig, Outcome};
use evsource::store::{AppendError, EventStore, LogConfig, LogStore, MemoryStore};
use support::{TempDir, event, stream};
use tokio::sync::Barrier;

const ROUNDS: u64 = 20;
const RACERS: u128 = 8;

async fn exact_appends_have_one_winner_per_version<S: EventStore>(store: S) {
    let target = stream("contended");
    let barrier = Arc::new(Barrier::new(RACERS as usize));
    let tasks: Vec<_> = (0..RACERS)
        .map(|racer| {
            let (store, target, barrier) = (store.clone(), target.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut wins = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait().await;
                    let expected = match round {
                        0 => ExpectedVersion::NoStream,
                        r => ExpectedVersion::Exact(StreamVersion(r - 1)),
                    };
                    let id = u128::from(round) * 1000 + racer + 1;
                    match store.append(&target, expected, vec![event(id)]).await {
                        Ok(result) => wins.push((round, result.first_version)),
                        Err(AppendError::WrongExpectedVersion { .. }) => {}
                        Err(other) => panic!("unexpected {other}"),
                    }
                    // Everyone sees the round's winner before the next round starts.
                    barrier.wait().await;
                }
                wins
            })
        })
        .collect();
    let mut wins_per_round = vec![0; ROUNDS as usize];
    for task in tasks {
        for (round, version) in task.await.unwrap() {
            assert_eq!(version, StreamVersion(round));
            wins_per_round[round as usize] += 1;
        }
    }
    assert_eq!(
        wins_per_round,
        vec![1; ROUNDS as usize],
        "exactly one winner per version"
    );
    let events = store
        .read_stream(&target, StreamVersion(0), 1000)
        .await
        .unwrap();
    assert_eq!(events.len(), ROUNDS as usize);
}

fn handler<S: EventStore, D: evsource::decider::Aggregate>(store: S) -> CommandHandler<S, D>
where
    D::Command: Sync,
    D::State: Send,
    D::Event: Send,
    D::Rejection: Send,
{
    CommandHandler::new(store, HandlerConfig::default())
}

/// Seed 004: two concurrent withdrawals of 100 from a balance of 100.
async fn concurrent_withdrawals_never_overdraw<S: EventStore>(store: S) {
    let accounts: CommandHandler<S, Account> = handler(store);
    for round in 0..ROUNDS {
        let account = stream(&format!("account-{round}"));
        let mut env = FixedEnvironment::new(0, round);
        accounts
            .handle(
                &mut env,
                &account,
                CommandId(u128::from(round) << 8),
                &AccountCommand::Deposit { amount: 100 },
            )
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = (1..=2u128)
            .map(|client| {
                let (accounts, account, barrier) =
                    (accounts.clone(), account.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut env = FixedEnvironment::new(0, client as u64 + round * 10);
                    barrier.wait().await;
                    accounts
                        .handle(
                            &mut env,
                            &account,
                            CommandId((u128::from(round) << 8) + client),
                            &AccountCommand::Withdraw { amount: 100 },
                        )
                        .await
                })
            })
            .collect();
        let mut applied = 0;
        let mut rejected = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(Outcome::Applied { .. }) => applied += 1,
                Err(HandleError::Rejected(AccountRejection::InsufficientFunds {
                    balance: 0,
                    requested: 100,
                })) => rejected += 1,
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!((applied, rejected), (1, 1), "round {round}");
        let loaded = accounts.load(&account).await.unwrap();
        assert_eq!(loaded.state.balance, 0);
    }
}

/// Seed 003: the same withdrawal form submitted twice (same command id), concurrently and
/// again later: one effect.
async fn a_double_submit_takes_effect_once<S: EventStore>(store: S) {
    let accounts: CommandHandler<S, Account> = handler(store);
    for round in 0..ROUNDS {
        let account = stream(&format!("double-{round}"));
        let mut env = FixedEnvironment::new(0, round);
        accounts
            .handle(
                &mut env,
                &account,
                CommandId(1 << 100 | u128::from(round)),
                &AccountCommand::Deposit { amount: 500 },
            )
            .await
            .unwrap();
        let submit = CommandId(2 << 100 | u128::from(round));
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = (0..2u64)
            .map(|client| {
                let (accounts, account, barrier) =
                    (accounts.clone(), account.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut env = FixedEnvironment::new(0, client + round * 10);
                    barrier.wait().await;
                    accounts
                        .handle(
                            &mut env,
                            &account,
                            submit,
                            &AccountCommand::Withdraw { amount: 100 },
                        )
                        .await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap().expect("both submissions succeed"));
        }
        let applied = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Applied { .. }))
            .count();
        let already = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::AlreadyApplied { .. }))
            .count();
        assert_eq!((applied, already), (1, 1), "round {round}: {outcomes:?}");
        // A third, late resubmission is recognised too.
        let late = accounts
            .handle(
                &mut env,
                &account,
                submit,
                &AccountCommand::Withdraw { amount: 100 },
            )
            .await
            .unwrap();
        assert!(matches!(late, Outcome::AlreadyApplied { .. }));
        assert_eq!(accounts.load(&account).await.unwrap().state.balance, 400);
    }
}

/// Seed 000: two clients unlock one connector for different sessions at once.
async fn one_connector_one_unlock_request<S: EventStore>(store: S) {
    let stations: CommandHandler<S, Station> = handler(store);
    for round in 0..ROUNDS {
        let station = stream(&format!("station-CP{round}"));
        let barrier = Arc::new(Barrier::new(RACERS as usize));
        let tasks: Vec<_> = (0..RACERS)
            .map(|client| {
                let (stations, station, barrier) =
                    (stations.clone(), station.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut env = FixedEnvironment::new(0, client as u64);
                    barrier.wait().await;
                    let command = StationCommand::RequestUnlock {
                        connector: 1,
                        session: format!("r{round}c{client}"),
                    };
                    stations
                        .handle(
                            &mut env,
                            &station,
                            CommandId(u128::from(round) << 16 | client),
                            &command,
                        )
                        .await
                })
            })
            .collect();
        let mut applied = 0;
        for task in tasks {
            if let Ok(Outcome::Applied { .. }) = task.await.unwrap() {
                applied += 1;
            }
        }
        assert_eq!(applied, 1);
        let events = stations
            .store()
            .read_stream(&station, StreamVersion(0), 100)
            .await
            .unwrap();
        let requests = events
            .iter()
            .filter(|e| e.event_type == "UnlockRequested")
            .count();
        assert_eq!(requests, 1);
    }
}

/// Seed 002, one stream per show: racing reservations of one seat.
async fn a_show_stream_is_never_overbooked<S: EventStore>(store: S) {
    let shows: CommandHandler<S, Seats> = handler(store);
    let show = stream("show-42");
    let mut env = FixedEnvironment::new(0, 1);
    shows
        .handle(
            &mut env,
            &show,
            CommandId(1),
            &SeatsCommand::ScheduleShow {
                show: "42".into(),
                seats: 4,
            },
        )
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(RACERS as usize));
    let tasks: Vec<_> = (0..RACERS)
        .map(|client| {
            let (shows, show, barrier) = (shows.clone(), show.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut env = FixedEnvironment::new(0, client as u64);
                barrier.wait().await;
                // Everyone wants seat 2; half also want seat 3.
                let seats = if client % 2 == 0 { vec![2] } else { vec![3, 2] };
                let command = SeatsCommand::Reserve {
                    seats,
                    customer: format!("c{client}"),
                };
                shows
                    .handle(&mut env, &show, CommandId(100 + client), &command)
                    .await
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Outcome::Applied { .. }) => applied += 1,
            Err(HandleError::Rejected(SeatsRejection::SeatTaken { .. })) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(applied, 1);
    // Replaying asserts in `evolve` that no seat is held twice.
    let state = shows.load(&show).await.unwrap().state;
    assert_eq!(state.holders.get(&2).map(String::len), Some(2));
}

/// Seed 002 across streams: each reservation its own stream, the boundary a query.
async fn reservations_across_streams_are_never_overbooked<S: EventStore>(store: S) {
    let shows: CommandHandler<S, Seats> = handler(store.clone());
    let mut env = FixedEnvironment::new(0, 1);
    shows
        .handle(
            &mut env,
            &stream("show-7"),
            CommandId(7),
            &SeatsCommand::ScheduleShow {
                show: "7".into(),
                seats: 10,
            },
        )
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(RACERS as usize));
    let tasks: Vec<_> = (0..RACERS)
        .map(|client| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                // Clients 0..4 fight over seats 1 and 2; clients 4..8 each want their own seat.
                let seats = if client < 4 {
                    vec![1 + (client as u32 % 2), 2 - (client as u32 % 2)]
                } else {
                    vec![client as u32 + 1]
                };
                barrier.wait().await;
                for attempt in 0..50 {
                    let command = CommandId(1000 + client * 100 + attempt);
                    match reserve_across_streams(
                        &store,
                        "7",
                        &seats,
                        &format!("c{client}"),
                        command,
                        0,
                    )
                    .await
                    {
                        Ok(result) => return Ok(result),
                        // The conflicting event may still be syncing; reads see it once it
                        // is durable, so retry after that rather than spinning.
                        Err(CrossStreamError::Append(AppendError::ConditionFailed {
                            position,
                        })) => store.wait_for_event_count_above(position.0).await.unwrap(),
                        Err(other) => return Err(other),
                    }
                }
                panic!("no progress after 50 attempts");
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let contested_wins = results[..4].iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        contested_wins, 1,
        "one of the clients fighting over seats 1-2 wins: {results:?}"
    );
    for loser in results[..4].iter().filter(|r| r.is_err()) {
        assert!(matches!(
            loser,
            Err(CrossStreamError::Rejected(SeatsRejection::SeatTaken { .. }))
        ));
    }
    assert!(
        results[4..].iter().all(|r| r.is_ok()),
        "disjoint seats never block each other"
    );
    // Fold every seat event of the show: `evolve` asserts no seat is held twice.
    let all = store
        .read_all(evsource::core::GlobalPosition(0), 1000)
        .await
        .unwrap();
    let events: Vec<SeatsEvent> = all
        .iter()
        .map(|e| {
            <Seats as evsource::decider::Aggregate>::decode_event(&e.event_type, &e.payload)
                .unwrap()
        })
        .collect();
    let state = Seats::fold(&events);
    assert_eq!(state.holders.len(), 2 + 4);
}

macro_rules! races {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(MemoryStore::default()).await;
                }
            )*
        }
        mod log {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let dir = TempDir::new(stringify!($name));
                    let config = LogConfig { segment_bytes: 4 * 1024 * 1024, ..LogConfig::default() };
                    super::$name(LogStore::open_dir(dir.path(), config).unwrap()).await;
                }
            )*
        }
    };
}

races!(
    exact_appends_have_one_winner_per_version,
    concurrent_withdrawals_never_overdraw,
    a_double_submit_takes_effect_once,
    one_connector_one_unlock_request,
    a_show_stream_is_never_overbooked,
    reservations_across_streams_are_never_overbooked,
);

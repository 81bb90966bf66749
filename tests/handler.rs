//! The command handler's contract beyond races: snapshots every N events cut the replay,
//! a snapshot of another schema is ignored (never misread), snapshots survive reopening the
//! log, a command id cannot be reused on another stream, rejections store nothing, and the
//! state cache never decides on a stale state.

mod support;

use evsource::core::{CommandId, Snapshot, StreamVersion};
use evsource::domain::account::{Account, AccountCommand, AccountRejection, AccountState};
use evsource::environment::FixedEnvironment;
use evsource::handler::{CommandHandler, HandleError, HandlerConfig, Outcome};
use evsource::store::{EventStore, LogConfig, LogStore, MemoryStore};
use support::{TempDir, stream};

fn config(snapshot_every_events: u64) -> HandlerConfig {
    HandlerConfig {
        snapshot_every_events,
        ..HandlerConfig::default()
    }
}

async fn deposit_times<S: EventStore>(
    accounts: &CommandHandler<S, Account>,
    account: &str,
    times: u64,
) {
    let mut env = FixedEnvironment::new(1_700_000_000_000, 7);
    for n in 0..times {
        let outcome = accounts
            .handle(
                &mut env,
                &stream(account),
                CommandId(u128::from(n) + 1),
                &AccountCommand::Deposit { amount: 1 },
            )
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Applied { attempts: 1, .. }));
    }
}

#[tokio::test]
async fn snapshots_cut_the_replay_and_give_the_same_state() {
    let store = MemoryStore::default();
    let accounts: CommandHandler<_, Account> = CommandHandler::new(store.clone(), config(10));
    deposit_times(&accounts, "account-1", 25).await;
    let snapshot = store
        .load_snapshot(&stream("account-1"))
        .await
        .unwrap()
        .expect("saved");
    assert_eq!(
        snapshot.version,
        StreamVersion(19),
        "saved when the stream reached 20 events"
    );
    let loaded = accounts.load(&stream("account-1")).await.unwrap();
    assert!(loaded.from_snapshot);
    assert_eq!(loaded.replayed_events, 5);
    assert_eq!(loaded.state, AccountState { balance: 25 });
    // Without snapshots the full replay gives the same state.
    let no_snapshots: CommandHandler<_, Account> =
        CommandHandler::new(MemoryStore::default(), config(0));
    deposit_times(&no_snapshots, "account-1", 25).await;
    let replayed = no_snapshots.load(&stream("account-1")).await.unwrap();
    assert_eq!(
        (
            replayed.state,
            replayed.replayed_events,
            replayed.from_snapshot
        ),
        (loaded.state, 25, false)
    );
}

#[tokio::test]
async fn a_snapshot_of_another_schema_is_ignored() {
    let store = MemoryStore::default();
    let accounts: CommandHandler<_, Account> = CommandHandler::new(store.clone(), config(0));
    deposit_times(&accounts, "account-2", 5).await;
    // A snapshot written by a future build whose state format differs.
    let alien = Snapshot {
        version: StreamVersion(4),
        schema_version: 99,
        state: br#"{"balance_cents": 123456}"#.to_vec(),
    };
    store
        .save_snapshot(&stream("account-2"), alien)
        .await
        .unwrap();
    let loaded = accounts.load(&stream("account-2")).await.unwrap();
    assert!(!loaded.from_snapshot);
    assert_eq!(loaded.state.balance, 5);
}

#[tokio::test]
async fn snapshots_and_events_survive_reopening_the_log() {
    let dir = TempDir::new("handler-reopen");
    let log_config = LogConfig {
        segment_bytes: 4 * 1024 * 1024,
        ..LogConfig::default()
    };
    {
        let store = LogStore::open_dir(dir.path(), log_config.clone()).unwrap();
        let accounts: CommandHandler<_, Account> = CommandHandler::new(store, config(8));
        deposit_times(&accounts, "account-3", 20).await;
    }
    let store = LogStore::open_dir(dir.path(), log_config).unwrap();
    let accounts: CommandHandler<_, Account> = CommandHandler::new(store, config(8));
    let loaded = accounts.load(&stream("account-3")).await.unwrap();
    assert!(loaded.from_snapshot);
    assert_eq!(
        loaded.replayed_events, 4,
        "snapshot at 16 events, 4 replayed"
    );
    assert_eq!(loaded.state.balance, 20);
}

#[tokio::test]
async fn a_command_id_cannot_take_effect_on_two_streams() {
    let accounts: CommandHandler<_, Account> =
        CommandHandler::new(MemoryStore::default(), config(0));
    let mut env = FixedEnvironment::new(0, 1);
    let command = CommandId(77);
    accounts
        .handle(
            &mut env,
            &stream("account-a"),
            command,
            &AccountCommand::Deposit { amount: 5 },
        )
        .await
        .unwrap();
    let reused = accounts
        .handle(
            &mut env,
            &stream("account-b"),
            command,
            &AccountCommand::Deposit { amount: 5 },
        )
        .await;
    assert_eq!(
        reused,
        Err(HandleError::CommandIdReused {
            command,
            other_stream: stream("account-a")
        })
    );
    assert_eq!(
        accounts.load(&stream("account-b")).await.unwrap().version,
        evsource::core::CurrentVersion::NoStream
    );
}

#[tokio::test]
async fn a_rejected_command_stores_nothing_and_records_metadata_on_success() {
    let store = MemoryStore::default();
    let accounts: CommandHandler<_, Account> = CommandHandler::new(store.clone(), config(0));
    let mut env = FixedEnvironment::new(1_234, 1);
    let rejected = accounts
        .handle(
            &mut env,
            &stream("account-z"),
            CommandId(1),
            &AccountCommand::Withdraw { amount: 1 },
        )
        .await;
    assert_eq!(
        rejected,
        Err(HandleError::Rejected(AccountRejection::InsufficientFunds {
            balance: 0,
            requested: 1
        }))
    );
    assert_eq!(store.event_count().await.unwrap(), 0);
    accounts
        .handle(
            &mut env,
            &stream("account-z"),
            CommandId(2),
            &AccountCommand::Deposit { amount: 3 },
        )
        .await
        .unwrap();
    let stored = store
        .read_stream(&stream("account-z"), StreamVersion(0), 10)
        .await
        .unwrap();
    assert_eq!(stored[0].event_type, "Deposited");
    assert_eq!(stored[0].payload, br#"{"amount":3}"#);
    assert_eq!(stored[0].metadata.command_id, Some(CommandId(2)));
    assert_eq!(stored[0].metadata.recorded_at_millis, 1_234);
}

/// A withdrawal of `requested` refused for a balance of `balance`.
fn refused(balance: u64, requested: u64) -> Result<Outcome, HandleError<AccountRejection>> {
    Err(HandleError::Rejected(AccountRejection::InsufficientFunds {
        balance,
        requested,
    }))
}

/// The state cache is only ever behind, never stale: a handler whose cached balance is 10
/// still sees another writer's withdrawal before deciding, and with room for one stream
/// the cache evicts and reloads without changing a single decision.
#[tokio::test]
async fn a_cached_state_catches_up_with_other_writers_and_survives_eviction() {
    let store = MemoryStore::default();
    let tight = HandlerConfig {
        state_cache_streams: 1,
        ..config(0)
    };
    let cached: CommandHandler<_, Account> = CommandHandler::new(store.clone(), tight);
    let other: CommandHandler<_, Account> = CommandHandler::new(store.clone(), config(0));
    let mut env = FixedEnvironment::new(1_234, 1);
    let mut command = 0u128;
    let mut run = async |handler: &CommandHandler<_, Account>, account: &str, op| {
        command += 1;
        handler
            .handle(&mut env, &stream(account), CommandId(command), &op)
            .await
    };
    run(
        &cached,
        "account-c1",
        AccountCommand::Deposit { amount: 10 },
    )
    .await
    .unwrap();
    run(
        &other,
        "account-c1",
        AccountCommand::Withdraw { amount: 10 },
    )
    .await
    .unwrap();
    assert_eq!(
        run(
            &cached,
            "account-c1",
            AccountCommand::Withdraw { amount: 5 }
        )
        .await,
        refused(0, 5),
        "the cached balance of 10 was caught up to 0 before deciding"
    );
    // Alternate two streams through a one-stream cache.
    for round in 1..=3u64 {
        for account in ["account-c2", "account-c3"] {
            run(&cached, account, AccountCommand::Deposit { amount: 1 })
                .await
                .unwrap();
            assert_eq!(
                cached.load(&stream(account)).await.unwrap().state.balance,
                round
            );
        }
    }
    assert_eq!(
        run(
            &cached,
            "account-c2",
            AccountCommand::Withdraw { amount: 4 }
        )
        .await,
        refused(3, 4)
    );
}

//! The bank scenarios: seed 004 (`withdraw`: concurrent withdrawals must never overdraw,
//! I6) and seed 003 (`double-submit`: a form submitted twice must take effect once, I8).
//!
//! Clients on their own simulated machines run commands concurrently against one durable
//! log on a (possibly slow) simulated disk. The correct design is the real
//! [`CommandHandler`]; the naive designs are written here, in the simulator, on purpose:
//! * N2 `naive-read-model` validates against state read earlier (a lagging read model)
//!   and appends without an expected version;
//! * N3 `naive-version-check` checks the version itself, then appends with `Any` and
//!   fresh event ids — a read-then-write race outside the store.

use std::collections::BTreeMap;
use std::time::Duration;

use evsource::core::{CommandId, EventId, ExpectedVersion, StreamId, hash128};
use evsource::decider::Aggregate;
use evsource::domain::account::{Account, AccountCommand, AccountEvent};
use evsource::environment::FixedEnvironment;
use evsource::handler::{CommandHandler, HandlerConfig, encode_events};
use evsource::oracles::{
    Violation, check_commands_once, check_store_shape, fingerprint, read_all_events,
};
use evsource::store::{EventStore, LogStore};
use madsim::rand::Rng;
use madsim::runtime::Handle;

use crate::faults::{Design, FaultPlan, simulated_log};

/// Which bank workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankWorkload {
    /// Many clients withdraw from few accounts that hold just enough for some of them.
    Withdraw,
    /// Every withdrawal form is submitted twice, concurrently, with the same command id.
    DoubleSubmit,
}

/// What a bank run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankSummary {
    /// Hash of the stored history: the same seed must give the same (I9).
    pub fingerprint: u128,
    pub commands: u64,
    pub withdrawals_applied: u64,
    pub withdrawals_refused: u64,
}

const ACCOUNTS: u64 = 3;
const CLIENTS: u64 = 6;
const COMMANDS_PER_CLIENT: u64 = 8;
const OPENING_BALANCE: u64 = 300;
const WITHDRAWAL: u64 = 100;

fn account(index: u64) -> StreamId {
    StreamId::new(&format!("account-{index}")).expect("valid stream id")
}

/// Runs the workload under `design` and judges it (I3, I6, I8).
pub async fn run(
    workload: BankWorkload,
    design: Design,
    faults: &FaultPlan,
) -> Result<BankSummary, Violation> {
    let handle = Handle::current();
    let (_disk, store) = simulated_log(faults);
    let handler: CommandHandler<LogStore, Account> =
        CommandHandler::new(store.clone(), HandlerConfig::default());
    for index in 0..ACCOUNTS {
        let mut env = FixedEnvironment::new(0, index);
        let deposit = AccountCommand::Deposit {
            amount: OPENING_BALANCE,
        };
        handler
            .handle(
                &mut env,
                &account(index),
                CommandId(u128::from(index) + 1),
                &deposit,
            )
            .await
            .expect("opening deposit");
    }
    let copies = if workload == BankWorkload::DoubleSubmit {
        2
    } else {
        1
    };
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        for copy in 0..copies {
            let (store, handler) = (store.clone(), handler.clone());
            let node = handle
                .create_node()
                .name(format!("client-{client}-{copy}"))
                .build();
            tasks.push(
                node.spawn(async move { run_client(client, copy, design, &store, &handler).await }),
            );
        }
    }
    let mut summary = BankSummary::default();
    for task in tasks {
        let (applied, refused) = task.await.expect("client finished");
        summary.withdrawals_applied += applied;
        summary.withdrawals_refused += refused;
    }
    summary.commands = CLIENTS * COMMANDS_PER_CLIENT;
    let events = read_all_events(&store)
        .await
        .expect("the simulated store reads");
    summary.fingerprint = fingerprint(&events);
    check_store_shape(&events)?;
    check_balances(&events)?;
    check_commands_once(&events)?;
    Ok(summary)
}

/// One client: withdrawals (and some deposits) on seed-chosen accounts. Copy 1 of a
/// double submit replays copy 0's forms with the same command ids.
async fn run_client(
    client: u64,
    copy: u64,
    design: Design,
    store: &LogStore,
    handler: &CommandHandler<LogStore, Account>,
) -> (u64, u64) {
    let mut env = FixedEnvironment::new(0, madsim::rand::thread_rng().r#gen());
    let mut choices = madsim::rand::thread_rng();
    let (mut applied, mut refused) = (0, 0);
    for n in 0..COMMANDS_PER_CLIENT {
        // Both copies of a form pick the same account and amount: derive from the form.
        let form = hash128(format!("form/{client}/{n}").as_bytes());
        let target = account(form as u64 % ACCOUNTS);
        let command = if form.is_multiple_of(5) {
            AccountCommand::Deposit { amount: WITHDRAWAL }
        } else {
            AccountCommand::Withdraw { amount: WITHDRAWAL }
        };
        let command_id = CommandId(form);
        tokio::time::sleep(Duration::from_millis(choices.gen_range(0..50) + copy)).await;
        let took_effect = match design {
            Design::NaiveReadModel => naive_read_model(store, &target, command_id, &command).await,
            Design::NaiveVersionCheck => {
                naive_version_check(store, &target, command_id, &command).await
            }
            _ => handler
                .handle(&mut env, &target, command_id, &command)
                .await
                .is_ok(),
        };
        if matches!(command, AccountCommand::Withdraw { .. }) {
            if took_effect {
                applied += 1
            } else {
                refused += 1
            }
        }
    }
    (applied, refused)
}

/// Replays `stream` into account state, with wrapping arithmetic: a naive design may
/// have stored an overdraft, and reading it back must not panic.
async fn read_balance(store: &LogStore, stream: &StreamId) -> (i128, Option<u64>) {
    let events = match store
        .read_stream(stream, evsource::core::StreamVersion(0), usize::MAX)
        .await
    {
        Ok(events) => events,
        Err(evsource::store::ReadError::StreamNotFound(_)) => Vec::new(),
        // Never judge an account by a read that failed: that would pass any balance.
        Err(error) => panic!("reading {stream} back failed: {error}"),
    };
    let balance = events.iter().fold(0i128, |balance, e| {
        match Account::decode_event(&e.event_type, &e.payload) {
            Ok(AccountEvent::Deposited { amount }) => balance + i128::from(amount),
            Ok(AccountEvent::Withdrawn { amount }) => balance - i128::from(amount),
            Err(_) => balance,
        }
    });
    (balance, events.last().map(|e| e.version.0))
}

/// N2: decide against a balance read a moment ago (the read model lags), append with
/// `Any`.
async fn naive_read_model(
    store: &LogStore,
    stream: &StreamId,
    command_id: CommandId,
    command: &AccountCommand,
) -> bool {
    let (balance, _) = read_balance(store, stream).await;
    tokio::time::sleep(Duration::from_millis(
        madsim::rand::thread_rng().gen_range(0..20),
    ))
    .await;
    let allowed = match command {
        AccountCommand::Withdraw { amount } => balance >= i128::from(*amount),
        AccountCommand::Deposit { .. } => true,
    };
    if !allowed {
        return false;
    }
    append_unchecked(store, stream, command_id, command, ExpectedVersion::Any).await
}

/// N3: check that the version is still the one read, then append with `Any` and fresh
/// event ids — the check and the write are two steps, outside the store.
async fn naive_version_check(
    store: &LogStore,
    stream: &StreamId,
    command_id: CommandId,
    command: &AccountCommand,
) -> bool {
    let (balance, version) = read_balance(store, stream).await;
    if let AccountCommand::Withdraw { amount } = command
        && balance < i128::from(*amount)
    {
        return false;
    }
    tokio::time::sleep(Duration::from_millis(
        madsim::rand::thread_rng().gen_range(0..20),
    ))
    .await;
    let (_, version_now) = read_balance(store, stream).await;
    if version_now != version {
        return false; // "someone else wrote; reject" — but the race is already open
    }
    append_unchecked(store, stream, command_id, command, ExpectedVersion::Any).await
}

async fn append_unchecked(
    store: &LogStore,
    stream: &StreamId,
    command_id: CommandId,
    command: &AccountCommand,
    expected: ExpectedVersion,
) -> bool {
    let event = match *command {
        AccountCommand::Deposit { amount } => AccountEvent::Deposited { amount },
        AccountCommand::Withdraw { amount } => AccountEvent::Withdrawn { amount },
    };
    let mut data = encode_events::<Account>(&[event], command_id, 0);
    // Fresh ids: the naive designs know nothing of idempotent event ids.
    data[0].id = EventId(madsim::rand::thread_rng().r#gen());
    store.append(stream, expected, data).await.is_ok()
}

/// **I6** — no account balance ever goes below zero, at any point of its history.
pub fn check_balances(events: &[evsource::core::RecordedEvent]) -> Result<(), Violation> {
    let mut balances: BTreeMap<&str, i128> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| e.stream.as_str().starts_with("account-"))
    {
        let balance = balances.entry(event.stream.as_str()).or_default();
        match Account::decode_event(&event.event_type, &event.payload) {
            Ok(AccountEvent::Deposited { amount }) => *balance += i128::from(amount),
            Ok(AccountEvent::Withdrawn { amount }) => *balance -= i128::from(amount),
            Err(error) => {
                return Err(Violation {
                    invariant: "I10",
                    detail: format!("{} at {}: {error}", event.stream, event.position),
                });
            }
        }
        if *balance < 0 {
            return Err(Violation {
                invariant: "I6",
                detail: format!(
                    "{} went to {} at {}",
                    event.stream, *balance, event.position
                ),
            });
        }
    }
    Ok(())
}

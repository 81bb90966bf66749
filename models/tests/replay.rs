//! Model to code: random paths of the append model, replayed step by step against the real
//! in-memory store. Every append the model attempts is made on the real store with the same
//! expected version and ids; the real store must accept exactly when the model's store
//! does (an idempotent repeat included), and after every step both hold the same events,
//! id for id. Zero divergences over thousands of steps, for every design — so what the
//! checker explores is what the store does.

use evsource::core::{EventData, EventId, Limits, Metadata, StreamId, StreamVersion};
use evsource::decider::{Aggregate, Decider};
use evsource::domain::account::{Account, AccountCommand, AccountState};
use evsource::environment::SplitMix64;
use evsource::store::{AppendError, EventStore, MemoryStore};
use evsource_models::append::{Action, AppendDesign, AppendModel, State, Step};
use stateright::Model;

fn data(id: EventId, event: &evsource::domain::account::AccountEvent) -> EventData {
    let encoded = Account::encode_event(event);
    EventData {
        id,
        event_type: encoded.event_type,
        tags: encoded.tags,
        metadata: Metadata {
            command_id: None,
            causation_id: None,
            correlation_id: None,
            recorded_at_millis: 0,
        },
        payload: encoded.payload,
    }
}

/// The ids the real store holds for `stream`, in order.
async fn stored_ids(store: &MemoryStore, stream: &StreamId) -> Vec<EventId> {
    store
        .read_stream(stream, StreamVersion(0), 1_000)
        .await
        .map(|events| events.iter().map(|e| e.id).collect())
        .unwrap_or_default()
}

/// Walks the model from its initial state with seeded random choices, mirroring every
/// append on the real store. Returns the steps taken.
async fn replay(model: &AppendModel, seed: u64) -> usize {
    let store = MemoryStore::new(Limits::default());
    let stream = StreamId::new("account-1").unwrap();
    let mut state: State = model.init_states().remove(0);
    let opening: Vec<EventData> = state
        .stream
        .iter()
        .map(|s| {
            data(
                s.id,
                &evsource::domain::account::AccountEvent::Deposited {
                    amount: model.opening,
                },
            )
        })
        .collect();
    store
        .append(&stream, evsource::core::ExpectedVersion::NoStream, opening)
        .await
        .expect("the opening deposit");
    let mut rng = SplitMix64::new(seed);
    let mut steps = 0;
    loop {
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        if actions.is_empty() {
            return steps;
        }
        let action = actions[rng.below(actions.len() as u64) as usize];
        let next = model.next_state(&state, action).expect("an enabled action");
        if let Action::Append(h) = action {
            let (command, version, balance) = match state.handlers[h as usize] {
                Step::Loaded {
                    next,
                    version,
                    balance,
                    ..
                } => (next, version, balance),
                Step::Checked { next, balance, .. } => (next, None, balance),
                ref other => panic!("append from {other:?}"),
            };
            let decided = Account::decide(
                &AccountState { balance },
                &AccountCommand::Withdraw {
                    amount: model.amount,
                },
            );
            if let Ok(events) = decided {
                let ids = model.event_ids(&state, h, command, events.len());
                let batch: Vec<EventData> = ids
                    .iter()
                    .zip(&events)
                    .map(|(id, event)| data(*id, event))
                    .collect();
                let real = store.append(&stream, model.expected(version), batch).await;
                let model_accepted = matches!(next.handlers[h as usize], Step::Appended { .. });
                match (&real, model_accepted) {
                    (Ok(_), true) => {}
                    (Err(AppendError::WrongExpectedVersion { .. }), false) => {}
                    _ => panic!(
                        "divergence at step {steps} of seed {seed} ({action}): the real store said {real:?}, the model {}",
                        if model_accepted {
                            "accepted"
                        } else {
                            "refused"
                        }
                    ),
                }
            }
        }
        let model_ids: Vec<EventId> = next.stream.iter().map(|s| s.id).collect();
        assert_eq!(
            stored_ids(&store, &stream).await,
            model_ids,
            "divergence after step {steps} of seed {seed} ({action})"
        );
        state = next;
        steps += 1;
    }
}

#[test]
fn model_paths_replay_on_the_real_store_without_divergence() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for design in AppendDesign::ALL {
        let model = AppendModel::new(3, 2, 2, design);
        let mut steps = 0;
        for seed in 0..300 {
            steps += runtime.block_on(replay(&model, seed));
        }
        assert!(
            steps > 3_000,
            "{}: enough steps to mean something ({steps})",
            design.name()
        );
    }
}

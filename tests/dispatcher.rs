//! The outbox dispatcher, driven sans-IO: it sends only to online stations, one CALL in
//! flight per station; retransmits with the same message id on the same connection and a
//! new one after a reconnect; turns answers plus mirror evidence into definitive outcomes;
//! drops late answers; times out requests it could never send; and never advances its
//! checkpoint past a request whose outcome event it has not read (so a restart re-sends).

use evsource::core::GlobalPosition;
use evsource::dispatcher::{DispatchEffect, Dispatcher, DispatcherConfig};
use evsource::domain::station::{SessionId, StationAnswer, StationEvent};
use evsource::mirror::UnlockEvidence;
use evsource::ocpp::messages::RemoteStartStopStatus::{Accepted, Rejected};

fn config() -> DispatcherConfig {
    DispatcherConfig {
        call_timeout_millis: 1_000,
        retry_base_millis: 100,
        retry_max_millis: 1_000,
        undeliverable_after_millis: 10_000,
        ..DispatcherConfig::default()
    }
}

fn requested(connector: u32, session: &str) -> StationEvent {
    StationEvent::UnlockRequested {
        connector,
        session: SessionId::new(session).unwrap(),
    }
}

fn effects(dispatcher: &mut Dispatcher) -> Vec<DispatchEffect> {
    std::iter::from_fn(|| dispatcher.poll_effect()).collect()
}

fn sends(effects: &[DispatchEffect]) -> Vec<(String, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            DispatchEffect::Send {
                call_id, id_tag, ..
            } => Some((call_id.clone(), id_tag.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_accepted_unlock_is_recorded_and_only_then_checkpointed() {
    let mut dispatcher = Dispatcher::new(config(), None);
    dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
    assert!(
        sends(&effects(&mut dispatcher)).is_empty(),
        "offline: nothing sent"
    );
    dispatcher.handle_link("CP1", true, 10);
    let sent = sends(&effects(&mut dispatcher));
    assert_eq!(sent, vec![("rs-1".to_string(), "s1".to_string())]);
    dispatcher.handle_answer("CP1", "rs-1", Accepted, UnlockEvidence::Unknown, 20);
    let decided = effects(&mut dispatcher);
    assert_eq!(
        decided,
        vec![DispatchEffect::RecordOutcome {
            station: "CP1".into(),
            session: "s1".into(),
            answer: StationAnswer::Accepted
        }]
    );
    // The outcome event is read back: now the checkpoint may pass the request.
    dispatcher.handle_event(
        GlobalPosition(1),
        "CP1",
        &StationEvent::UnlockAccepted {
            connector: 1,
            session: SessionId::new("s1").unwrap(),
        },
        30,
    );
    assert_eq!(
        effects(&mut dispatcher),
        vec![DispatchEffect::SaveCheckpoint(GlobalPosition(1))]
    );
    assert_eq!(dispatcher.tracked_requests(), 0);
}

#[test]
fn one_call_in_flight_per_station_and_stations_do_not_block_each_other() {
    let mut dispatcher = Dispatcher::new(config(), None);
    dispatcher.handle_link("CP1", true, 0);
    dispatcher.handle_link("CP2", true, 0);
    dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "a"), 0);
    dispatcher.handle_event(GlobalPosition(1), "CP1", &requested(2, "b"), 0);
    dispatcher.handle_event(GlobalPosition(2), "CP2", &requested(1, "c"), 0);
    let sent = sends(&effects(&mut dispatcher));
    assert_eq!(
        sent.iter().map(|(_, tag)| tag.as_str()).collect::<Vec<_>>(),
        vec!["a", "c"]
    );
    dispatcher.handle_answer("CP1", &sent[0].0, Accepted, UnlockEvidence::Unknown, 5);
    let next = sends(&effects(&mut dispatcher));
    assert_eq!(
        next.iter().map(|(_, tag)| tag.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );
}

#[test]
fn an_unanswered_call_is_sent_again_as_a_new_call_with_a_new_id() {
    let mut dispatcher = Dispatcher::new(config(), None);
    dispatcher.handle_link("CP1", true, 0);
    dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
    let first = sends(&effects(&mut dispatcher));
    assert_eq!(dispatcher.poll_timeout(), Some(1_000));
    dispatcher.handle_timeout(1_000);
    let due = dispatcher.poll_timeout().unwrap();
    dispatcher.handle_timeout(due);
    let second = sends(&effects(&mut dispatcher));
    // OCPP-J: a CALL's message id is never reused on a connection (I12); the retry is
    // idempotent by its idTag instead.
    assert_ne!(second[0].0, first[0].0, "same connection: a new message id");
    assert_eq!(second[0].1, first[0].1, "the same idTag");
    // The first attempt's late answer is no longer awaited: dropped.
    dispatcher.handle_answer("CP1", &first[0].0, Rejected, UnlockEvidence::Free, due);
    assert!(effects(&mut dispatcher).is_empty());
    dispatcher.handle_link("CP1", false, due + 1);
    dispatcher.handle_link("CP1", true, due + 2);
    let third = sends(&effects(&mut dispatcher));
    assert_ne!(third[0].0, first[0].0, "new connection: new message id");
    assert_ne!(third[0].0, second[0].0, "new connection: new message id");
    // The answer to the old call arrives late: dropped, not matched to the new call.
    dispatcher.handle_answer("CP1", &first[0].0, Rejected, UnlockEvidence::Free, due + 3);
    assert!(effects(&mut dispatcher).is_empty());
    dispatcher.handle_answer(
        "CP1",
        &third[0].0,
        Accepted,
        UnlockEvidence::Unknown,
        due + 4,
    );
    assert!(matches!(
        effects(&mut dispatcher)[..],
        [DispatchEffect::RecordOutcome {
            answer: StationAnswer::Accepted,
            ..
        }]
    ));
}

#[test]
fn a_rejection_is_checked_against_the_mirror() {
    let cases = [
        (
            UnlockEvidence::ForThisRequest,
            Some(StationAnswer::Accepted),
        ),
        (
            UnlockEvidence::ForAnother {
                id_tag: "other".into(),
            },
            Some(StationAnswer::Rejected),
        ),
        (UnlockEvidence::Free, Some(StationAnswer::Rejected)),
        (UnlockEvidence::Unknown, Some(StationAnswer::Rejected)),
        (UnlockEvidence::BusyUnknown, None),
    ];
    for (evidence, expected) in cases {
        let mut dispatcher = Dispatcher::new(config(), None);
        dispatcher.handle_link("CP1", true, 0);
        dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
        let sent = sends(&effects(&mut dispatcher));
        dispatcher.handle_answer("CP1", &sent[0].0, Rejected, evidence.clone(), 10);
        let decided: Vec<StationAnswer> = effects(&mut dispatcher)
            .into_iter()
            .filter_map(|e| match e {
                DispatchEffect::RecordOutcome { answer, .. } => Some(answer),
                _ => None,
            })
            .collect();
        assert_eq!(decided.first().copied(), expected, "{evidence:?}");
        if expected.is_none() {
            assert!(
                dispatcher.poll_timeout().unwrap() > 10,
                "retried later, after a backoff"
            );
        }
    }
}

#[test]
fn a_request_that_can_never_be_sent_times_out() {
    let mut dispatcher = Dispatcher::new(config(), None);
    dispatcher.handle_event(GlobalPosition(0), "CP9", &requested(1, "s1"), 0);
    assert_eq!(dispatcher.poll_timeout(), Some(10_000));
    dispatcher.handle_timeout(10_000);
    assert_eq!(
        effects(&mut dispatcher),
        vec![DispatchEffect::RecordOutcome {
            station: "CP9".into(),
            session: "s1".into(),
            answer: StationAnswer::TimedOut
        }]
    );
}

#[test]
fn a_restart_from_the_checkpoint_sends_again_what_was_not_recorded() {
    let mut dispatcher = Dispatcher::new(config(), None);
    dispatcher.handle_link("CP1", true, 0);
    dispatcher.handle_event(
        GlobalPosition(0),
        "CP1",
        &StationEvent::SessionStopped {
            connector: 2,
            session: SessionId::new("old").unwrap(),
        },
        0,
    );
    dispatcher.handle_event(GlobalPosition(1), "CP1", &requested(1, "s1"), 0);
    let before_crash = effects(&mut dispatcher);
    assert!(before_crash.contains(&DispatchEffect::SaveCheckpoint(GlobalPosition(0))));
    assert!(
        !before_crash
            .iter()
            .any(|e| matches!(e, DispatchEffect::SaveCheckpoint(p) if p.0 >= 1)),
        "{before_crash:?}"
    );
    // Crash: the answer is lost. The new dispatcher resumes after the saved checkpoint.
    let mut restarted = Dispatcher::new(config(), Some(GlobalPosition(0)));
    restarted.handle_link("CP1", true, 100);
    restarted.handle_event(GlobalPosition(1), "CP1", &requested(1, "s1"), 100);
    assert_eq!(
        sends(&effects(&mut restarted)).len(),
        1,
        "re-sent after the restart"
    );
}

#[test]
fn the_naive_early_checkpoint_passes_a_request_before_its_outcome() {
    let mut naive = Dispatcher::new(
        DispatcherConfig {
            checkpoint: evsource::dispatcher::CheckpointPolicy::OnRead,
            ..config()
        },
        None,
    );
    naive.handle_link("CP1", true, 0);
    naive.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
    let effects = effects(&mut naive);
    assert!(
        effects.contains(&DispatchEffect::SaveCheckpoint(GlobalPosition(0))),
        "N4 checkpoints at once: {effects:?}"
    );
}

/// Sharing a store, a dispatcher acts only for stations it owns: an online station it does
/// not own gets nothing sent and nothing timed out, however long it waits; owned, the
/// request goes out; lost while decided but unrecorded, the decision is dropped (the new
/// owner records its own) and made afresh if ownership returns; an outcome recorded by
/// another node resolves the request all the same.
#[test]
fn only_the_owner_sends_or_decides() {
    let mut dispatcher = Dispatcher::new(
        DispatcherConfig {
            requires_ownership: true,
            ..config()
        },
        None,
    );
    dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
    dispatcher.handle_link("CP1", true, 0);
    dispatcher.handle_timeout(50_000);
    assert_eq!(
        effects(&mut dispatcher),
        vec![],
        "not owned: no send, no TimedOut"
    );
    assert_eq!(dispatcher.poll_timeout(), None);

    dispatcher.handle_ownership("CP1", true, 60_000);
    assert_eq!(
        sends(&effects(&mut dispatcher)),
        vec![("rs-1".to_string(), "s1".to_string())]
    );
    dispatcher.handle_answer("CP1", "rs-1", Accepted, UnlockEvidence::Unknown, 60_010);
    assert_eq!(effects(&mut dispatcher).len(), 1, "decided: RecordOutcome");

    // The lease moves before the outcome is recorded: the decision is dropped.
    dispatcher.handle_ownership("CP1", false, 60_020);
    dispatcher.handle_timeout(200_000);
    assert_eq!(effects(&mut dispatcher), vec![]);
    // It comes back: the request is sent again (a new connection generation: a new id),
    // and its undeliverable clock starts now, not at its read.
    dispatcher.handle_ownership("CP1", true, 300_000);
    assert_eq!(
        sends(&effects(&mut dispatcher)),
        vec![("rs-2".to_string(), "s1".to_string())]
    );

    // Another node's outcome resolves the request here too.
    dispatcher.handle_event(
        GlobalPosition(1),
        "CP1",
        &StationEvent::UnlockAccepted {
            connector: 1,
            session: SessionId::new("s1").unwrap(),
        },
        300_010,
    );
    assert_eq!(
        effects(&mut dispatcher),
        vec![DispatchEffect::SaveCheckpoint(GlobalPosition(1))]
    );
    assert_eq!(dispatcher.tracked_requests(), 0);
}

/// Ownership lost and regained while a CALL is in flight: the connection still has that
/// CALL outstanding, so no new CALL goes out on it before the old one is answered or its
/// deadline passes (one CALL outstanding per connection, I12).
#[test]
fn a_call_abandoned_by_an_ownership_change_still_holds_the_connection() {
    let mut dispatcher = Dispatcher::new(
        DispatcherConfig {
            requires_ownership: true,
            ..config()
        },
        None,
    );
    dispatcher.handle_link("CP1", true, 0);
    dispatcher.handle_ownership("CP1", true, 0);
    dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
    let first = sends(&effects(&mut dispatcher));
    assert_eq!(first.len(), 1);
    dispatcher.handle_ownership("CP1", false, 100);
    dispatcher.handle_ownership("CP1", true, 200);
    assert!(
        sends(&effects(&mut dispatcher)).is_empty(),
        "the first CALL is outstanding"
    );
    // Its answer frees the connection: the request goes out again as a new CALL.
    dispatcher.handle_answer("CP1", &first[0].0, Accepted, UnlockEvidence::Unknown, 300);
    let second = sends(&effects(&mut dispatcher));
    assert_eq!(second.len(), 1, "sent again once the connection is free");
    assert_ne!(second[0].0, first[0].0);
    // Unanswered, the abandoned CALL holds the connection until its deadline.
    dispatcher.handle_ownership("CP1", false, 400);
    dispatcher.handle_ownership("CP1", true, 500);
    assert!(sends(&effects(&mut dispatcher)).is_empty());
    assert_eq!(
        dispatcher.poll_timeout(),
        Some(300 + 1_000),
        "woken at its deadline"
    );
    dispatcher.handle_timeout(1_300);
    assert_eq!(sends(&effects(&mut dispatcher)).len(), 1);
}

/// A CALL's timeout runs from when the shell sent it, not from when the dispatcher
/// decided to: a shell busy for a while must not let the next CALL out early (I12).
#[test]
fn a_calls_timeout_runs_from_when_it_was_sent() {
    let mut dispatcher = Dispatcher::new(config(), None);
    dispatcher.handle_link("CP1", true, 0);
    dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
    let first = sends(&effects(&mut dispatcher));
    // The shell got to sending it 900 ms later.
    dispatcher.handle_sent("CP1", &first[0].0, 900);
    assert_eq!(dispatcher.poll_timeout(), Some(1_900));
    dispatcher.handle_timeout(1_000);
    assert!(
        sends(&effects(&mut dispatcher)).is_empty(),
        "still outstanding at 1 s"
    );
    dispatcher.handle_timeout(1_900);
    let retry_at = dispatcher.poll_timeout().expect("a retry is scheduled");
    dispatcher.handle_timeout(retry_at);
    assert_eq!(
        sends(&effects(&mut dispatcher)).len(),
        1,
        "sent again after its timeout"
    );
}

/// A request read while another node (or an earlier incarnation) may have owned the
/// station may have been sent already: it is never recorded TimedOut, however long the
/// station stays away — only the station's answer settles it (I5).
#[test]
fn a_request_read_before_ownership_is_never_given_up_as_undeliverable() {
    let mut dispatcher = Dispatcher::new(
        DispatcherConfig {
            requires_ownership: true,
            ..config()
        },
        None,
    );
    dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
    dispatcher.handle_ownership("CP1", true, 10);
    dispatcher.handle_timeout(100_000);
    let decided = effects(&mut dispatcher)
        .into_iter()
        .any(|e| matches!(e, DispatchEffect::RecordOutcome { .. }));
    assert!(!decided, "no outcome without the station's answer");
    // Read while owned and never sent: given up after `undeliverable_after`, as before.
    dispatcher.handle_event(GlobalPosition(1), "CP1", &requested(2, "s2"), 100_000);
    dispatcher.handle_timeout(110_000);
    assert!(effects(&mut dispatcher).iter().any(|e| matches!(
        e,
        DispatchEffect::RecordOutcome {
            answer: StationAnswer::TimedOut,
            ..
        }
    )));
}

/// A CALL abandoned (ownership lost) before the shell got to send it still holds the
/// connection for its whole timeout from the moment it went out (I12).
#[test]
fn a_call_abandoned_before_it_went_out_holds_the_connection_from_its_send() {
    let mut dispatcher = Dispatcher::new(
        DispatcherConfig {
            requires_ownership: true,
            ..config()
        },
        None,
    );
    dispatcher.handle_link("CP1", true, 0);
    dispatcher.handle_ownership("CP1", true, 0);
    dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
    let first = sends(&effects(&mut dispatcher));
    // The shell was busy: ownership flipped, then the CALL went out, 80 s late.
    dispatcher.handle_ownership("CP1", false, 80_000);
    dispatcher.handle_sent("CP1", &first[0].0, 80_000);
    dispatcher.handle_ownership("CP1", true, 80_050);
    dispatcher.handle_timeout(80_100);
    assert!(
        sends(&effects(&mut dispatcher)).is_empty(),
        "outstanding until 81 s"
    );
    dispatcher.handle_timeout(81_000);
    let retry_at = dispatcher.poll_timeout().expect("scheduled");
    dispatcher.handle_timeout(retry_at);
    assert_eq!(sends(&effects(&mut dispatcher)).len(), 1);
}

/// A request whose outcome another writer records while our CALL for it is out (a stale
/// node's unfenced append, say) is done, but the CALL is still outstanding on the
/// connection: the next request waits for its answer or its deadline (I12). The swarm
/// found the next CALL written beside it 0 ms into the first one's timeout.
#[test]
fn a_call_whose_request_another_writer_resolved_still_holds_the_connection() {
    let mut dispatcher = Dispatcher::new(config(), None);
    dispatcher.handle_link("CP1", true, 0);
    dispatcher.handle_event(GlobalPosition(0), "CP1", &requested(1, "s1"), 0);
    dispatcher.handle_event(GlobalPosition(1), "CP1", &requested(2, "s2"), 0);
    let first = sends(&effects(&mut dispatcher));
    assert_eq!(first.len(), 1, "one CALL at a time");
    let resolved_elsewhere = StationEvent::UnlockRejected {
        connector: 1,
        session: SessionId::new("s1").unwrap(),
    };
    dispatcher.handle_event(GlobalPosition(2), "CP1", &resolved_elsewhere, 100);
    assert!(
        sends(&effects(&mut dispatcher)).is_empty(),
        "the first CALL is still outstanding"
    );
    dispatcher.handle_answer("CP1", &first[0].0, Accepted, UnlockEvidence::Unknown, 200);
    let next = sends(&effects(&mut dispatcher));
    assert_eq!(next.len(), 1, "its answer frees the connection");
    assert_ne!(next[0].0, first[0].0);
}

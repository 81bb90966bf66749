//! The oracles themselves can fail: each is fed a healthy history (accepted) and a
//! history with exactly the defect it exists to catch (rejected, naming the invariant).

mod support;

use evsource::chargepoint::Actuation;
use evsource::core::{
    CommandId, EventData, EventId, GlobalPosition, Metadata, RecordedEvent, StreamVersion,
};
use evsource::decider::Aggregate;
use evsource::domain::station::{SessionId, Station, StationEvent};
use evsource::oracles::{
    ConnectorTruth, IMPOSTOR_MARK, StationConnectors, StationTruth, check_acknowledged,
    check_commands_once, check_impostors, check_no_starvation, check_sessions_match_stations,
    check_store_shape, check_transactions_delivered, check_unlocks,
};
use support::stream;

fn recorded(
    position: u64,
    stream_name: &str,
    version: u64,
    event: &StationEvent,
    command: u128,
) -> RecordedEvent {
    let encoded = Station::encode_event(event);
    RecordedEvent::from_data(
        stream(stream_name),
        StreamVersion(version),
        GlobalPosition(position),
        EventData {
            id: EventId(u128::from(position) + 1000),
            event_type: encoded.event_type,
            tags: encoded.tags,
            metadata: Metadata {
                command_id: Some(CommandId(command)),
                ..Metadata::default()
            },
            payload: encoded.payload,
        },
    )
}

fn requested(session: &str) -> StationEvent {
    StationEvent::UnlockRequested {
        connector: 1,
        session: SessionId::new(session).unwrap(),
    }
}

fn accepted(session: &str) -> StationEvent {
    StationEvent::UnlockAccepted {
        connector: 1,
        session: SessionId::new(session).unwrap(),
    }
}

fn unlock(id_tag: &str) -> Actuation {
    Actuation {
        at_millis: 0,
        connector: 1,
        id_tag: id_tag.into(),
    }
}

#[test]
fn unlock_oracle_accepts_a_clean_run_and_names_each_defect() {
    let history = vec![
        recorded(0, "station-CP1", 0, &requested("a"), 1),
        recorded(1, "station-CP1", 1, &accepted("a"), 2),
    ];
    let one = [unlock("a")];
    let clean = check_unlocks(
        &history,
        &[StationTruth {
            station: "CP1",
            actuations: &one,
        }],
    )
    .unwrap();
    assert_eq!(
        (clean.requests, clean.accepted, clean.actuations),
        (1, 1, 1)
    );
    let twice = [unlock("a"), unlock("a")];
    let invariant = |result: Result<_, evsource::oracles::Violation>| result.unwrap_err().invariant;
    assert_eq!(
        invariant(check_unlocks(
            &history,
            &[StationTruth {
                station: "CP1",
                actuations: &twice
            }]
        )),
        "I1"
    );
    assert_eq!(
        invariant(check_unlocks(
            &history,
            &[StationTruth {
                station: "CP1",
                actuations: &[]
            }]
        )),
        "I5"
    );
    assert_eq!(
        invariant(check_unlocks(
            &history[..1],
            &[StationTruth {
                station: "CP1",
                actuations: &one
            }]
        )),
        "I4"
    );
    let stranger = [unlock("a"), unlock("nobody")];
    assert_eq!(
        invariant(check_unlocks(
            &history,
            &[StationTruth {
                station: "CP1",
                actuations: &stranger
            }]
        )),
        "I1"
    );
}

#[test]
fn shape_command_and_acknowledgement_oracles_catch_their_defects() {
    let healthy = vec![
        recorded(0, "station-CP1", 0, &requested("a"), 1),
        recorded(1, "station-CP2", 0, &requested("b"), 2),
    ];
    check_store_shape(&healthy).unwrap();
    check_commands_once(&healthy).unwrap();
    check_acknowledged(&healthy, &[(CommandId(2), GlobalPosition(1))]).unwrap();

    let gap = vec![
        healthy[0].clone(),
        recorded(2, "station-CP2", 0, &requested("b"), 2),
    ];
    assert_eq!(check_store_shape(&gap).unwrap_err().invariant, "I3");
    let version_gap = vec![
        healthy[0].clone(),
        recorded(1, "station-CP1", 2, &requested("b"), 2),
    ];
    assert_eq!(check_store_shape(&version_gap).unwrap_err().invariant, "I3");

    let double_effect = vec![
        healthy[0].clone(),
        recorded(1, "station-CP2", 0, &requested("b"), 1),
    ];
    assert_eq!(
        check_commands_once(&double_effect).unwrap_err().invariant,
        "I8"
    );

    assert_eq!(
        check_acknowledged(&healthy, &[(CommandId(9), GlobalPosition(1))])
            .unwrap_err()
            .invariant,
        "I2"
    );
    assert_eq!(
        check_acknowledged(&healthy, &[(CommandId(2), GlobalPosition(5))])
            .unwrap_err()
            .invariant,
        "I2"
    );
}

#[test]
fn starvation_oracle_fails_a_run_with_a_command_refused_for_contention() {
    assert_eq!(check_no_starvation(&[]), Ok(()));
    let starved = vec![
        ("CP1".to_owned(), "gave up after 16 attempts".to_owned()),
        ("CP2".to_owned(), "gave up after 16 attempts".to_owned()),
    ];
    let violation = check_no_starvation(&starved).unwrap_err();
    assert_eq!(violation.invariant, "I4");
    assert!(
        violation.detail.contains("2 command(s) starved"),
        "{violation}"
    );
    assert!(violation.detail.contains("CP1"), "{violation}");
}

/// I5 over the business state: a session whose transaction the record shows started and
/// that the station no longer runs must be stopped in the record; one the station still
/// runs, one never started, and a station with a transaction message on its way are not
/// violations.
#[test]
fn sessions_oracle_fails_a_session_left_active_after_its_transaction_ended() {
    use evsource::mirror::TelemetryEvent;
    let started = {
        let event = TelemetryEvent::TransactionStarted {
            connector: 1,
            id_tag: "s1".into(),
            meter_start: 0,
            station_timestamp: "2026-11-23T00:00:00Z".into(),
            id_tag_accepted: true,
        };
        RecordedEvent::from_data(
            stream("telemetry-CP1"),
            StreamVersion(0),
            GlobalPosition(2),
            event.to_data(EventId(77), 0),
        )
    };
    let business = vec![
        recorded(0, "station-CP1", 0, &requested("s1"), 1),
        recorded(1, "station-CP1", 1, &accepted("s1"), 2),
    ];
    let mut with_start = business.clone();
    with_start.push(started);
    let connector = |released_for: Option<&str>| {
        vec![StationConnectors {
            station: "CP1".into(),
            connectors: Some(vec![ConnectorTruth {
                station: "CP1".into(),
                connector: 1,
                released_for: released_for.map(str::to_owned),
            }]),
        }]
    };

    let violation = check_sessions_match_stations(&with_start, &connector(None))
        .expect_err("the transaction ended, the session is still active");
    assert_eq!(violation.invariant, "I5");
    assert!(violation.detail.contains("s1"), "{}", violation.detail);

    check_sessions_match_stations(&with_start, &connector(Some("s1")))
        .expect("the station still runs the session");
    check_sessions_match_stations(&business, &connector(None))
        .expect("a session that never started a transaction is not judged");
    let pending = [StationConnectors {
        station: "CP1".into(),
        connectors: None,
    }];
    check_sessions_match_stations(&with_start, &pending)
        .expect("a station with a transaction message on its way is not judged yet");
    // ...but a message never delivered once everything healed fails the run.
    let never = check_transactions_delivered(&pending).expect_err("a stop never answered");
    assert_eq!(never.invariant, "I4");
    assert!(never.detail.contains("CP1"), "{}", never.detail);
    check_transactions_delivered(&connector(None)).expect("nothing pending");
    let mut stopped = with_start.clone();
    stopped.push(recorded(
        3,
        "station-CP1",
        2,
        &StationEvent::SessionStopped {
            connector: 1,
            session: SessionId::new("s1").unwrap(),
        },
        3,
    ));
    check_sessions_match_stations(&stopped, &connector(None)).expect("the end is recorded");
}

/// I13: a run in which the CSMS refused every impostor and recorded only the real
/// stations passes; an accepted impostor handshake fails it, and so does a stored event
/// holding the impostors' mark — in its payload or in its stream's name.
#[test]
fn impostor_oracle_fails_an_admitted_impostor_and_anything_it_left_in_the_store() {
    let clean = vec![
        recorded(0, "station-CP0", 0, &requested("c0n0"), 1),
        recorded(1, "station-CP0", 1, &accepted("c0n0"), 2),
    ];
    check_impostors(0, &clean).expect("nothing of an impostor");

    let admitted = check_impostors(1, &clean).expect_err("a handshake got through");
    assert_eq!(admitted.invariant, "I13");

    let mut marked = clean.clone();
    marked.push(recorded(2, "station-CP0", 2, &requested(IMPOSTOR_MARK), 3));
    let stored = check_impostors(0, &marked).expect_err("its idTag was recorded");
    assert_eq!(stored.invariant, "I13");
    assert!(stored.detail.contains("at @2"), "{}", stored.detail);

    let mut own_stream = clean;
    own_stream.push(recorded(
        2,
        &format!("station-{IMPOSTOR_MARK}-7"),
        0,
        &requested("x"),
        4,
    ));
    check_impostors(0, &own_stream).expect_err("a stream of an id nobody registered");
}

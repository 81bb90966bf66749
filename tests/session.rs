//! The CSMS side of a station connection: every CALL gets an answer (a CALLRESULT or the
//! right CALLERROR), nothing but BootNotification is served before the boot is accepted,
//! and the dispatcher is told the station is online only once the station itself has
//! shown it considers its boot accepted — never on a reconnect alone.

use evsource::ocpp::Frame;
use evsource::session::{SessionConfig, SessionOutput, StationSession};

fn outputs(session: &mut StationSession) -> Vec<SessionOutput> {
    std::iter::from_fn(|| session.poll_output()).collect()
}

fn replies(session: &mut StationSession) -> Vec<Frame> {
    std::iter::from_fn(|| session.poll_transmit())
        .map(|t| Frame::parse(&t).unwrap())
        .collect()
}

const BOOT: &str = r#"[2,"1","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]"#;
const STATUS: &str =
    r#"[2,"2","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Available"}]"#;
const HEARTBEAT: &str = r#"[2,"3","Heartbeat",{}]"#;

#[test]
fn a_new_station_goes_online_after_its_boot_and_a_first_other_call() {
    let mut session = StationSession::new("CP1", SessionConfig::default());
    session.handle_text(HEARTBEAT, 0);
    assert!(
        matches!(&replies(&mut session)[..], [Frame::CallError { .. }]),
        "no service before the boot"
    );
    session.handle_text(BOOT, 0);
    assert!(
        replies(&mut session).is_empty(),
        "a boot is answered once it is recorded"
    );
    let boot = outputs(&mut session);
    assert!(
        !boot.contains(&SessionOutput::Online),
        "the station may not have our answer yet"
    );
    let [SessionOutput::BootNotification { call_id, .. }] = &boot[..] else {
        panic!("the boot to record: {boot:?}");
    };
    session.complete_boot(call_id.clone(), true, 0);
    assert!(matches!(
        &replies(&mut session)[..],
        [Frame::CallResult { payload, .. }] if payload["status"] == "Accepted"
    ));
    session.handle_text(STATUS, 1);
    assert!(outputs(&mut session).contains(&SessionOutput::Online));
    assert!(session.send_remote_start("rs-1", 1, "tag"));
}

/// A boot the CSMS could not record (the store out of reach) is answered `Pending` with
/// the retry interval, and the station stays unserved: were it told `Accepted`, it would
/// never boot again, and every node it reconnects to would find no acceptance in the store
/// and refuse it forever. Its next boot, recorded, is accepted.
#[test]
fn a_boot_that_could_not_be_recorded_is_pending() {
    let config = SessionConfig {
        boot_retry_secs: 7,
        ..SessionConfig::default()
    };
    let mut session = StationSession::new("CP1", config);
    session.handle_text(BOOT, 0);
    let Some(SessionOutput::BootNotification { call_id, .. }) = session.poll_output() else {
        panic!("a boot to record");
    };
    session.complete_boot(call_id, false, 0);
    assert!(matches!(
        &replies(&mut session)[..],
        [Frame::CallResult { payload, .. }] if payload["status"] == "Pending" && payload["interval"] == 7
    ));
    assert!(!session.is_accepted());
    session.handle_text(HEARTBEAT, 1);
    assert!(
        matches!(&replies(&mut session)[..], [Frame::CallError { .. }]),
        "not served while pending"
    );
    session.handle_text(
        r#"[2,"5","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]"#,
        2,
    );
    let Some(SessionOutput::BootNotification { call_id, .. }) = session.poll_output() else {
        panic!("the second boot to record");
    };
    session.complete_boot(call_id, true, 2);
    assert!(session.is_accepted());
    assert!(matches!(
        &replies(&mut session)[..],
        [Frame::CallResult { payload, .. }] if payload["status"] == "Accepted"
    ));
}

#[test]
fn a_reconnected_station_goes_online_only_when_it_proves_it_is_accepted() {
    let mut session = StationSession::resume_accepted("CP1", SessionConfig::default());
    assert!(
        outputs(&mut session).is_empty(),
        "a reconnect alone proves nothing: the station may have rebooted"
    );
    // A rebooted station boots again first; still not online.
    session.handle_text(BOOT, 0);
    assert!(!outputs(&mut session).contains(&SessionOutput::Online));
    session.handle_text(HEARTBEAT, 1);
    assert!(outputs(&mut session).contains(&SessionOutput::Online));
    // Online is announced once per connection.
    session.handle_text(r#"[2,"4","Heartbeat",{}]"#, 2);
    assert!(!outputs(&mut session).contains(&SessionOutput::Online));
}

#[test]
fn every_call_is_answered_and_a_repeated_id_gets_the_same_answer() {
    let mut session = StationSession::resume_accepted("CP1", SessionConfig::default());
    session.handle_text(
        r#"[2,"7","FirmwareStatusNotification",{"status":"Idle"}]"#,
        0,
    );
    session.handle_text(r#"[2,"8","StatusNotification",{"connectorId":"one"}]"#, 0);
    session.handle_text(HEARTBEAT, 0);
    session.handle_text(HEARTBEAT, 5);
    let answers = replies(&mut session);
    assert!(
        matches!(&answers[0], Frame::CallError { code, .. } if code.as_str() == "NotImplemented")
    );
    assert!(
        matches!(&answers[1], Frame::CallError { code, .. } if code.as_str() == "TypeConstraintViolation")
    );
    assert_eq!(
        answers[2], answers[3],
        "a retransmission is answered identically"
    );
}

/// A StopTransaction is answered only once the node has recorded the stop and the
/// session's end: the station deletes a transaction message once answered, so an answer
/// given before the record would lose the stop if recording then failed.
#[test]
fn a_stop_is_answered_only_once_recorded() {
    let mut session = StationSession::resume_accepted("CP1", SessionConfig::default());
    session.handle_text(
        r#"[2,"9","StopTransaction",{"transactionId":7,"meterStop":10,"timestamp":"2026-11-23T10:00:02Z","reason":"Local"}]"#,
        0,
    );
    assert!(
        replies(&mut session).is_empty(),
        "no answer before the stop is recorded"
    );
    let stop = outputs(&mut session);
    let [
        SessionOutput::Online,
        SessionOutput::StopTransaction { call_id, request },
    ] = &stop[..]
    else {
        panic!("the stop to record: {stop:?}");
    };
    assert_eq!(request.transaction_id, 7);
    session.complete_stop_transaction(call_id.clone(), None);
    assert!(matches!(
        &replies(&mut session)[..],
        [Frame::CallResult { id, payload }] if id == "9" && payload.get("idTagInfo").is_none()
    ));
}

/// A StopTransaction that carries an idTag is told whether it is the idTag the
/// transaction ran for (Accepted) or not (Invalid); one without gets no idTagInfo.
#[test]
fn a_stop_with_an_idtag_gets_the_verdict_on_it() {
    for (id_tag_accepted, status) in [(Some(true), "Accepted"), (Some(false), "Invalid")] {
        let mut session = StationSession::resume_accepted("CP1", SessionConfig::default());
        session.handle_text(
            r#"[2,"9","StopTransaction",{"idTag":"s-1","transactionId":7,"meterStop":10,"timestamp":"2026-11-23T10:00:02Z"}]"#,
            0,
        );
        let stop = outputs(&mut session);
        let Some(SessionOutput::StopTransaction { call_id, request }) = stop.last() else {
            panic!("the stop to record: {stop:?}");
        };
        assert_eq!(request.id_tag.as_deref(), Some("s-1"));
        session.complete_stop_transaction(call_id.clone(), id_tag_accepted);
        assert!(matches!(
            &replies(&mut session)[..],
            [Frame::CallResult { payload, .. }] if payload["idTagInfo"]["status"] == status
        ));
    }
}

/// No station grows the node's state by inventing connectors: a connectorId past the
/// configured bound (or a transaction on connector 0, the station itself) gets a
/// PropertyConstraintViolation CALLERROR and nothing for the node to record.
#[test]
fn connector_ids_past_the_bound_are_refused_and_recorded_nowhere() {
    let config = SessionConfig {
        connectors_max: 2,
        ..SessionConfig::default()
    };
    let mut session = StationSession::resume_accepted("CP1", config);
    for (id, text) in [
        (
            "a",
            r#"[2,"a","StatusNotification",{"connectorId":4294967295,"errorCode":"NoError","status":"Available"}]"#,
        ),
        (
            "b",
            r#"[2,"b","StatusNotification",{"connectorId":3,"errorCode":"NoError","status":"Available"}]"#,
        ),
        (
            "c",
            r#"[2,"c","StartTransaction",{"connectorId":0,"idTag":"t","meterStart":0,"timestamp":"2026-11-23T10:00:00Z"}]"#,
        ),
        (
            "d",
            r#"[2,"d","MeterValues",{"connectorId":9,"meterValue":[{"timestamp":"2026-11-23T10:00:00Z","sampledValue":[{"value":"1"}]}]}]"#,
        ),
    ] {
        session.handle_text(text, 0);
        let replies = replies(&mut session);
        assert!(
            matches!(&replies[..], [Frame::CallError { id: got, code, .. }] if got == id && *code == evsource::ocpp::ErrorCode::PropertyConstraintViolation),
            "{text}: {replies:?}"
        );
        assert!(
            outputs(&mut session)
                .iter()
                .all(|o| matches!(o, SessionOutput::Online)),
            "nothing to record for {text}"
        );
    }
    session.handle_text(
        r#"[2,"e","StatusNotification",{"connectorId":2,"errorCode":"NoError","status":"Available"}]"#,
        0,
    );
    assert!(matches!(
        &replies(&mut session)[..],
        [Frame::CallResult { .. }]
    ));
}

/// The per-station bounds are store-wide `Limits`, and a session takes them from there.
#[test]
fn per_station_bounds_come_from_limits() {
    use evsource::core::Limits;
    let defaults = SessionConfig::default();
    assert_eq!(
        defaults.connectors_max,
        Limits::default().station_connectors_max
    );
    assert_eq!(
        defaults.open_transactions_max,
        Limits::default().station_open_transactions_max
    );
    let tight = Limits {
        station_connectors_max: 2,
        station_open_transactions_max: 3,
        ..Limits::default()
    };
    let config = SessionConfig::with_limits(&tight);
    assert_eq!(
        (config.connectors_max, config.open_transactions_max),
        (2, 3)
    );
    let mut session = StationSession::resume_accepted("CP1", config);
    session.handle_text(
        r#"[2,"s","StatusNotification",{"connectorId":3,"errorCode":"NoError","status":"Available"}]"#,
        0,
    );
    assert!(matches!(
        &replies(&mut session)[..],
        [Frame::CallError { code, .. }] if code.to_string() == "PropertyConstraintViolation"
    ));
}

//! The simulated charge point's OCPP behaviour, driven sans-IO with literal frames and a
//! hand-moved clock: boot gating, status announcements, heartbeats at the CSMS's interval,
//! remote start only on an Available connector, repeated message ids answered with the
//! original answer and repeated idTags accepted, both without a second actuation, reboots that forget volatile state but not
//! the ground truth, faults, timeouts, and CALLERRORs for malformed or unknown input.

use evsource::chargepoint::{ChargePoint, ChargePointConfig};
use evsource::ocpp::Frame;
use evsource::ocpp::messages::{ChargePointErrorCode, ChargePointStatus};
use serde_json::{Value, json};

const T0: u64 = 1_795_392_000_000;

/// Drains every frame the station wants to send now.
fn drain(station: &mut ChargePoint, now: u64) -> Vec<Frame> {
    std::iter::from_fn(|| station.poll_transmit(now))
        .map(|text| Frame::parse(&text).expect("the station sends valid frames"))
        .collect()
}

fn call(frame: &Frame) -> (&str, &str, &Value) {
    match frame {
        Frame::Call {
            id,
            action,
            payload,
        } => (id.as_str(), action.as_str(), payload),
        other => panic!("expected a CALL, got {other:?}"),
    }
}

/// Answers one CALL from the station the way a simple CSMS would.
fn answer(station: &mut ChargePoint, frame: Frame, now: u64) -> Option<(String, Value)> {
    let Frame::Call {
        id,
        action,
        payload,
    } = frame
    else {
        return None;
    };
    let answer = match action.as_str() {
        "BootNotification" => {
            json!({"status": "Accepted", "currentTime": "2026-11-23T00:00:00Z", "interval": 60})
        }
        "Heartbeat" => json!({"currentTime": "2026-11-23T00:00:00Z"}),
        "StartTransaction" => json!({"idTagInfo": {"status": "Accepted"}, "transactionId": 7}),
        _ => json!({}),
    };
    station.handle_text(
        &Frame::CallResult {
            id,
            payload: answer,
        }
        .to_text(),
        now,
    );
    Some((action, payload))
}

/// Answers the station's CALLs until it has nothing more to say; returns them in order.
fn serve(station: &mut ChargePoint, now: u64) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    loop {
        let frames = drain(station, now);
        if frames.is_empty() {
            return seen;
        }
        seen.extend(
            frames
                .into_iter()
                .filter_map(|frame| answer(station, frame, now)),
        );
    }
}

fn booted(connectors: u32) -> ChargePoint {
    let mut station = ChargePoint::new(ChargePointConfig::new("CP1", connectors), T0);
    station.handle_connected(T0);
    serve(&mut station, T0);
    assert!(station.is_accepted());
    station
}

fn remote_start(
    station: &mut ChargePoint,
    id: &str,
    connector: u32,
    id_tag: &str,
    now: u64,
) -> Value {
    let request = Frame::Call {
        id: id.into(),
        action: "RemoteStartTransaction".into(),
        payload: json!({"connectorId": connector, "idTag": id_tag}),
    };
    station.handle_text(&request.to_text(), now);
    let mut status = None;
    for frame in drain(station, now) {
        match frame {
            Frame::CallResult {
                id: reply_id,
                payload,
            } if reply_id == id => {
                status = Some(payload["status"].clone());
            }
            call @ Frame::Call { .. } => {
                answer(station, call, now);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    serve(station, now);
    status.expect("the station answered")
}

#[test]
fn boots_first_then_announces_every_connector_then_heartbeats() {
    let mut station = ChargePoint::new(ChargePointConfig::new("CP1", 2), T0);
    assert!(
        drain(&mut station, T0).is_empty(),
        "nothing is sent before connecting"
    );
    station.handle_connected(T0);
    let first = drain(&mut station, T0);
    assert_eq!(first.len(), 1, "one CALL outstanding at a time");
    let (id, action, _) = call(&first[0]);
    assert_eq!(action, "BootNotification");
    station.handle_text(
        &Frame::CallResult {
            id: id.into(),
            payload: json!({"status": "Accepted", "currentTime": "x", "interval": 60}),
        }
        .to_text(),
        T0,
    );
    let announced = serve(&mut station, T0);
    let connectors: Vec<u64> = announced
        .iter()
        .map(|(a, p)| {
            assert_eq!(a, "StatusNotification");
            p["connectorId"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(connectors, vec![0, 1, 2]);
    assert_eq!(
        station.poll_timeout(),
        Some(T0 + 60_000),
        "heartbeat at the CSMS's interval"
    );
    station.handle_timeout(T0 + 60_000);
    let beat = serve(&mut station, T0 + 60_000);
    assert_eq!(
        beat.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        vec!["Heartbeat"]
    );
}

#[test]
fn a_pending_boot_sends_nothing_else_and_retries_after_the_interval() {
    let mut station = ChargePoint::new(ChargePointConfig::new("CP1", 1), T0);
    station.handle_connected(T0);
    let boot = drain(&mut station, T0);
    let id = call(&boot[0]).0.to_owned();
    station.handle_text(
        &Frame::CallResult {
            id,
            payload: json!({"status": "Pending", "currentTime": "x", "interval": 30}),
        }
        .to_text(),
        T0,
    );
    assert_eq!(
        remote_start(&mut station, "r1", 1, "tag", T0),
        json!("Rejected"),
        "no remote start before acceptance"
    );
    assert!(station.actuations().is_empty());
    assert!(drain(&mut station, T0 + 29_000).is_empty());
    assert_eq!(station.poll_timeout(), Some(T0 + 30_000));
    let retry = drain(&mut station, T0 + 30_000);
    assert_eq!(call(&retry[0]).1, "BootNotification");
}

#[test]
fn remote_start_unlocks_once_and_a_repeated_message_id_gets_the_same_answer() {
    let mut station = booted(2);
    assert_eq!(
        remote_start(&mut station, "m-1", 1, "req-1", T0),
        json!("Accepted")
    );
    assert_eq!(
        remote_start(&mut station, "m-1", 1, "req-1", T0 + 5),
        json!("Accepted"),
        "retransmission: original answer"
    );
    assert_eq!(station.actuations().len(), 1, "one physical unlock");
    // A new CALL with the same idTag: already done, no second unlock.
    assert_eq!(
        remote_start(&mut station, "m-2", 1, "req-1", T0 + 10),
        json!("Accepted")
    );
    // Another request for the busy connector is refused.
    assert_eq!(
        remote_start(&mut station, "m-3", 1, "req-2", T0 + 10),
        json!("Rejected")
    );
    assert_eq!(station.actuations().len(), 1);
    assert_eq!(
        station.connector(1).unwrap().status,
        ChargePointStatus::Preparing
    );
    // The driver plugs in: StartTransaction, then Charging.
    station.handle_timeout(T0 + 2_000);
    let sent = serve(&mut station, T0 + 2_000);
    let actions: Vec<&str> = sent.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, vec!["StartTransaction", "StatusNotification"]);
    assert_eq!(sent[0].1["idTag"], json!("req-1"));
    assert_eq!(sent[1].1["status"], json!("Charging"));
    assert_eq!(station.connector(1).unwrap().transaction_id, Some(7));
    assert_eq!(
        station.connector(1).unwrap().status,
        ChargePointStatus::Charging
    );
}

#[test]
fn without_a_plug_in_the_connector_returns_to_available() {
    let mut config = ChargePointConfig::new("CP1", 1);
    config.plug_in_delay_millis = u64::MAX / 2;
    let mut station = ChargePoint::new(config, T0);
    station.handle_connected(T0);
    serve(&mut station, T0);
    assert_eq!(
        remote_start(&mut station, "m-1", 1, "req-1", T0),
        json!("Accepted")
    );
    station.handle_timeout(T0 + 60_000);
    assert_eq!(
        station.connector(1).unwrap().status,
        ChargePointStatus::Available
    );
    assert_eq!(
        remote_start(&mut station, "m-2", 1, "req-2", T0 + 60_001),
        json!("Accepted")
    );
    assert_eq!(station.actuations().len(), 2);
}

#[test]
fn a_reboot_forgets_volatile_state_but_not_the_ground_truth() {
    let mut station = booted(1);
    assert_eq!(
        remote_start(&mut station, "m-1", 1, "req-1", T0),
        json!("Accepted")
    );
    station.handle_reboot(T0 + 100);
    assert!(!station.is_accepted());
    assert_eq!(
        station.actuations().len(),
        1,
        "what happened physically stays"
    );
    assert_eq!(
        station.connector(1).unwrap().status,
        ChargePointStatus::Available
    );
    let boot = drain(&mut station, T0 + 100);
    let (id, action, _) = call(&boot[0]);
    assert_eq!(
        (id, action),
        ("1", "BootNotification"),
        "message ids start over after a reboot"
    );
    // After the reboot, the same message id is a new request, not a retransmission, and
    // the journaled idTag is still recognised: no second unlock.
    station.handle_text(
        &Frame::CallResult {
            id: "1".into(),
            payload: json!({"status": "Accepted", "currentTime": "x", "interval": 60}),
        }
        .to_text(),
        T0 + 100,
    );
    serve(&mut station, T0 + 100);
    assert_eq!(
        remote_start(&mut station, "m-1", 1, "req-1", T0 + 150),
        json!("Accepted")
    );
    assert_eq!(
        station.actuations().len(),
        1,
        "req-1 was already unlocked before the reboot"
    );
    assert_eq!(
        remote_start(&mut station, "m-2", 1, "req-9", T0 + 200),
        json!("Accepted")
    );
    assert_eq!(station.actuations().len(), 2);
}

#[test]
fn a_running_transaction_is_reported_stopped_after_a_reboot() {
    let mut station = booted(1);
    remote_start(&mut station, "m-1", 1, "req-1", T0);
    station.handle_timeout(T0 + 2_000);
    serve(&mut station, T0 + 2_000);
    station.handle_reboot(T0 + 3_000);
    let after = serve(&mut station, T0 + 3_000);
    let stop = after
        .iter()
        .find(|(a, _)| a == "StopTransaction")
        .expect("stop reported");
    assert_eq!(stop.1["transactionId"], json!(7));
    assert_eq!(stop.1["reason"], json!("Reboot"));
}

#[test]
fn an_undervoltage_fault_refuses_remote_starts_until_cleared() {
    let mut station = booted(1);
    station.handle_fault(1, ChargePointErrorCode::UnderVoltage, T0);
    let sent = serve(&mut station, T0);
    assert_eq!(sent[0].1["errorCode"], json!("UnderVoltage"));
    assert_eq!(sent[0].1["status"], json!("Faulted"));
    assert_eq!(
        remote_start(&mut station, "m-1", 1, "req-1", T0),
        json!("Rejected")
    );
    station.handle_fault_cleared(1, T0 + 1);
    serve(&mut station, T0 + 1);
    assert_eq!(
        remote_start(&mut station, "m-2", 1, "req-1", T0 + 2),
        json!("Accepted")
    );
}

#[test]
fn malformed_and_unknown_calls_get_callerrors_never_silence() {
    let mut station = booted(1);
    station.handle_text(r#"[2,"x1","RemoteStartTransaction",{"connectorId":1}]"#, T0);
    station.handle_text(r#"[2,"x2","Reset",{"type":"Hard"}]"#, T0);
    station.handle_text(r#"[2,"x3","RemoteStartTransaction"]"#, T0);
    station.handle_text("not json at all", T0);
    let replies = drain(&mut station, T0);
    let codes: Vec<(String, String)> = replies
        .iter()
        .map(|f| match f {
            Frame::CallError { id, code, .. } => (id.clone(), code.to_string()),
            other => panic!("expected CALLERROR, got {other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            ("x1".into(), "OccurenceConstraintViolation".into()),
            ("x2".into(), "NotImplemented".into()),
            ("x3".into(), "FormationViolation".into()),
        ]
    );
    assert!(station.actuations().is_empty());
}

#[test]
fn a_late_reply_is_dropped_not_matched_to_a_later_call() {
    let mut station = booted(1);
    station.handle_timeout(T0 + 60_000);
    let beat = drain(&mut station, T0 + 60_000);
    let (beat_id, _, _) = call(&beat[0]);
    let beat_id = beat_id.to_owned();
    // The heartbeat times out; the queue moves on.
    station.handle_timeout(T0 + 60_000 + 30_000);
    station.handle_text(
        &Frame::CallResult {
            id: beat_id,
            payload: json!({"currentTime": "x"}),
        }
        .to_text(),
        T0 + 95_000,
    );
    assert!(station.poll_timeout().is_some());
}

#[test]
fn a_station_without_a_real_time_clock_reports_1970_after_boot() {
    let mut config = ChargePointConfig::new("CP1", 1);
    config.rtc = false;
    let mut station = ChargePoint::new(config, T0);
    station.handle_connected(T0);
    let frames = serve(&mut station, T0 + 5_000);
    let status = frames
        .iter()
        .find(|(a, _)| a == "StatusNotification")
        .unwrap();
    assert!(
        status.1["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("1970-01-01T00:00:05")
    );
}

#[test]
fn an_unavailable_connector_refuses_remote_starts_until_back_in_service() {
    let mut station = booted(1);
    station.handle_availability(1, false, T0);
    let sent = serve(&mut station, T0);
    assert_eq!(sent[0].1["status"], json!("Unavailable"));
    assert_eq!(
        remote_start(&mut station, "m-1", 1, "req-1", T0),
        json!("Rejected")
    );
    station.handle_availability(1, true, T0 + 1);
    serve(&mut station, T0 + 1);
    assert_eq!(
        remote_start(&mut station, "m-2", 1, "req-1", T0 + 2),
        json!("Accepted")
    );
    assert_eq!(station.actuations().len(), 1);
}

/// A booted one-connector station that unlocked its connector for `req-1` at `T0`; the EV
/// plugs in a second later and charges for `charging_millis`.
fn unlocked_for_a_driver(charging_millis: u64) -> ChargePoint {
    let mut config = ChargePointConfig::new("CP1", 1);
    config.plug_in_delay_millis = 1_000;
    config.charging_millis = Some(charging_millis);
    let mut station = ChargePoint::new(config, T0);
    station.handle_connected(T0);
    serve(&mut station, T0);
    assert_eq!(
        remote_start(&mut station, "m-1", 1, "req-1", T0),
        json!("Accepted")
    );
    station
}

/// An EV that leaves before the CSMS has answered StartTransaction waits for the
/// transaction id: no StopTransaction without one, and no timer that stays due (a driver
/// would spin on it), then the stop goes out once the id arrives.
#[test]
fn an_unplug_before_the_transaction_id_is_known_waits_for_it() {
    let mut station = unlocked_for_a_driver(1_000);
    station.handle_timeout(T0 + 1_000);
    let start = drain(&mut station, T0 + 1_000);
    assert_eq!(call(&start[0]).1, "StartTransaction");
    // The answer is slow; the charging time runs out meanwhile.
    let later = T0 + 5_000;
    station.handle_timeout(later);
    assert!(
        station.poll_timeout().is_none_or(|at| at > later),
        "no timer may stay due after handle_timeout: {:?}",
        station.poll_timeout()
    );
    assert_eq!(
        station.connector(1).unwrap().status,
        ChargePointStatus::Charging
    );
    answer(&mut station, start.into_iter().next().unwrap(), later);
    assert_eq!(
        station.poll_timeout(),
        Some(T0 + 2_000),
        "the unplug is due now"
    );
    station.handle_timeout(later);
    let sent = serve(&mut station, later);
    let actions: Vec<&str> = sent.iter().map(|(a, _)| a.as_str()).collect();
    assert!(
        actions.contains(&"StopTransaction"),
        "stopped once the id is known: {actions:?}"
    );
    assert_eq!(
        station.connector(1).unwrap().status,
        ChargePointStatus::Available
    );
}

/// An EV pausing and resuming (SuspendedEV ↔ Charging) reports each change and keeps
/// its transaction; the driver can unplug while the EV is paused, and the stop goes out.
#[test]
fn an_ev_pause_is_reported_and_an_unplug_while_paused_still_stops() {
    let mut station = unlocked_for_a_driver(10_000);
    station.handle_timeout(T0 + 1_000);
    serve(&mut station, T0 + 1_000);
    let status = |station: &ChargePoint| station.connector(1).unwrap().status;
    assert_eq!(status(&station), ChargePointStatus::Charging);

    let mut sent = Vec::new();
    for (at, paused) in [(2_000, true), (2_001, true), (2_002, false), (2_003, true)] {
        station.handle_ev_pause(1, paused, T0 + at);
        sent.extend(serve(&mut station, T0 + at));
    }
    let statuses: Vec<&Value> = sent
        .iter()
        .filter(|(a, _)| a == "StatusNotification")
        .map(|(_, p)| &p["status"])
        .collect();
    assert_eq!(
        statuses,
        [
            &json!("SuspendedEV"),
            &json!("Charging"),
            &json!("SuspendedEV")
        ],
        "one notification per change, none for a repeated pause"
    );

    station.handle_timeout(T0 + 11_000);
    let sent = serve(&mut station, T0 + 11_000);
    assert!(
        sent.iter().any(|(a, _)| a == "StopTransaction"),
        "unplugged while paused: {sent:?}"
    );
    assert_eq!(status(&station), ChargePointStatus::Available);
    station.handle_ev_pause(1, true, T0 + 12_000);
    assert_eq!(
        status(&station),
        ChargePointStatus::Available,
        "an idle connector has no EV to pause"
    );
}

/// Status reports that wait behind an unanswered call are superseded per connector: the
/// CSMS gets each connector's latest state, not a backlog of stale ones that would hold
/// the transaction messages queued among them back (over a lossy link, for minutes).
#[test]
fn queued_status_reports_are_superseded_by_newer_ones_for_the_same_connector() {
    let mut station = booted(2);
    station.handle_timeout(T0 + 60_000);
    let held = drain(&mut station, T0 + 60_000);
    assert_eq!(call(&held[0]).1, "Heartbeat", "a call is in flight");
    station.handle_availability(2, false, T0 + 60_001);
    for flap in 0..10 {
        station.handle_availability(1, flap % 2 == 1, T0 + 60_002 + flap);
    }
    for frame in held {
        answer(&mut station, frame, T0 + 61_000);
    }
    let sent = serve(&mut station, T0 + 61_000);
    let reported: Vec<(u64, &str)> = sent
        .iter()
        .filter(|(action, _)| action == "StatusNotification")
        .map(|(_, p)| {
            (
                p["connectorId"].as_u64().unwrap(),
                p["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [(2, "Unavailable"), (1, "Available")],
        "one report per connector, the latest, in the order of their last change"
    );
}

/// Heartbeats coalesce while the CSMS is slow to answer: one queued heartbeat is enough,
/// so a stalled link does not fill the station's queue with them.
#[test]
fn heartbeats_do_not_pile_up_behind_an_unanswered_call() {
    let mut station = booted(1);
    let interval = 60_000;
    // Remote start, then hold the StartTransaction unanswered for ten intervals.
    remote_start(&mut station, "m-1", 1, "req-1", T0);
    station.handle_timeout(T0 + 2_000);
    let held = drain(&mut station, T0 + 2_000);
    assert_eq!(call(&held[0]).1, "StartTransaction");
    for beat in 1..=10 {
        station.handle_timeout(T0 + beat * interval);
    }
    // Answer it (within the call timeout is not required: it is retried if late).
    for frame in held {
        answer(&mut station, frame, T0 + 10 * interval);
    }
    let sent = serve(&mut station, T0 + 10 * interval);
    let heartbeats = sent.iter().filter(|(a, _)| a == "Heartbeat").count();
    assert_eq!(heartbeats, 1, "one heartbeat waited, not ten: {sent:?}");
}

/// A transaction message the CSMS refuses with a CALLERROR (a node that has not yet read
/// the station's boot back answers SecurityError) is not dropped: it goes out again after
/// a call timeout, or the CSMS would never learn the transaction stopped.
#[test]
fn a_stop_refused_with_a_callerror_is_sent_again() {
    let mut station = unlocked_for_a_driver(1_000);
    station.handle_timeout(T0 + 1_000);
    serve(&mut station, T0 + 1_000);
    station.handle_timeout(T0 + 2_000);
    let sent = drain(&mut station, T0 + 2_000);
    let stop = sent
        .iter()
        .find(|frame| call(frame).1 == "StopTransaction")
        .expect("the unplug sends a stop")
        .clone();
    station.handle_text(
        &Frame::CallError {
            id: call(&stop).0.to_owned(),
            code: evsource::ocpp::ErrorCode::SecurityError,
            description: "BootNotification must be accepted first".into(),
            details: json!({}),
        }
        .to_text(),
        T0 + 2_001,
    );
    assert!(
        station.transaction_calls_undelivered(),
        "the refused stop is kept"
    );
    let later = T0 + 2_001 + 30_000;
    station.handle_timeout(later);
    let again = serve(&mut station, later);
    let resent = again
        .iter()
        .find(|(a, _)| a == "StopTransaction")
        .expect("the stop is sent again after a call timeout");
    assert_eq!(resent.1["transactionId"], json!(7));
    assert!(!station.transaction_calls_undelivered());
}

/// A reboot while StartTransaction awaits its answer ends the transaction before the
/// station knows its id: once the answer tells it, the station reports it stopped
/// (reason Reboot), as the connector it was for starts over as Available.
#[test]
fn a_transaction_cut_by_a_reboot_before_its_id_is_known_is_stopped_once_it_is() {
    let mut station = unlocked_for_a_driver(60_000);
    station.handle_timeout(T0 + 1_000);
    let start = drain(&mut station, T0 + 1_000);
    assert_eq!(call(&start[0]).1, "StartTransaction");
    station.handle_reboot(T0 + 1_500);
    assert_eq!(
        station.connector(1).unwrap().status,
        ChargePointStatus::Available
    );
    let after = serve(&mut station, T0 + 1_500);
    assert!(
        after.iter().any(|(a, _)| a == "StartTransaction"),
        "the journaled start goes out again: {after:?}"
    );
    let stop = after
        .iter()
        .find(|(a, _)| a == "StopTransaction")
        .expect("the answered start is followed by its stop");
    assert_eq!(stop.1["transactionId"], json!(7));
    assert_eq!(stop.1["reason"], json!("Reboot"));
    assert_eq!(station.connector(1).unwrap().transaction_id, None);
}

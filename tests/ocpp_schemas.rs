//! Schema conformance: what the CSMS sends, checked against the official OCPP 1.6 JSON
//! schemas that the PyPI `ocpp` package ships, loaded from the installed package
//! (`EVSOURCE_OCPP_SCHEMAS`, set by `cargo xtask test`) — never copied into this
//! repository. With the variable set, the simulated stations (`node::driver`, used by
//! the loopback test and every simulation) and the endpoint tests check every frame the
//! CSMS sends them as well; this file proves the checker is real and covers the
//! session's every answer.

use serde_json::{Value, json};

use evsource::ocpp::schema::{SCHEMAS_VAR, SchemaError, Schemas};
use evsource::session::{SessionConfig, SessionOutput, StationSession};

fn schemas() -> &'static Schemas {
    Schemas::from_env().unwrap_or_else(|| {
        panic!(
            "{SCHEMAS_VAR} is not set: run `cargo xtask test`, or point it at the \
             ocpp/v16/schemas directory of an installed PyPI `ocpp` package"
        )
    })
}

const T0: u64 = 1_795_000_000_000;

/// The station's CALLs, with the CSMS's answers to each, after a full conversation.
fn conversation() -> Vec<(String, String)> {
    let mut session = StationSession::new("CP1", SessionConfig::default());
    let calls = [
        json!([2, "1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]),
        json!([2, "2", "Heartbeat", {}]),
        json!([2, "3", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": "2026-11-23T10:00:00Z"}]),
        json!([2, "4", "StartTransaction", {"connectorId": 1, "idTag": "s-1", "meterStart": 0, "timestamp": "2026-11-23T10:00:01Z"}]),
        json!([2, "5", "StopTransaction", {"transactionId": 7, "meterStop": 10, "timestamp": "2026-11-23T10:00:02Z", "reason": "Local"}]),
        json!([2, "6", "Authorize", {"idTag": "s-1"}]),
        json!([2, "7", "Authorize", {"idTag": "stranger"}]),
        json!([2, "8", "MeterValues", {"connectorId": 1, "transactionId": 7, "meterValue": [{"timestamp": "2026-11-23T10:00:03Z", "sampledValue": [{"value": "12"}]}]}]),
        json!([2, "9", "DataTransfer", {"vendorId": "com.example"}]),
    ];
    let mut actions = std::collections::BTreeMap::new();
    for frame in &calls {
        actions.insert(
            frame[1].as_str().unwrap().to_owned(),
            frame[2].as_str().unwrap().to_owned(),
        );
        session.handle_text(&frame.to_string(), T0);
        while let Some(output) = session.poll_output() {
            match output {
                SessionOutput::BootNotification { call_id, .. } => {
                    session.complete_boot(call_id, true, T0);
                }
                SessionOutput::StartTransaction { call_id, .. } => {
                    session.complete_start_transaction(call_id, 7, true);
                }
                SessionOutput::StopTransaction { call_id, .. } => {
                    session.complete_stop_transaction(call_id, None);
                }
                SessionOutput::Authorize { call_id, id_tag } => {
                    session.complete_authorize(call_id, id_tag == "s-1");
                }
                _ => {}
            }
        }
    }
    assert!(session.send_remote_start("r-1", 1, "s-2"));
    let mut sent = Vec::new();
    while let Some(text) = session.poll_transmit() {
        let frame: Value = serde_json::from_str(&text).unwrap();
        let action = match frame[0].as_u64() {
            Some(3) => actions[frame[1].as_str().unwrap()].clone(),
            _ => String::new(),
        };
        sent.push((text, action));
    }
    sent
}

#[test]
fn every_answer_and_request_of_the_csms_conforms() {
    let schemas = schemas();
    let sent = conversation();
    assert_eq!(
        sent.len(),
        10,
        "nine answers and one RemoteStartTransaction: {sent:?}"
    );
    for (text, action) in &sent {
        let answered = (!action.is_empty()).then_some(action.as_str());
        schemas
            .check_frame(text, answered)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    assert!(
        sent.iter()
            .any(|(text, _)| text.contains("RemoteStartTransaction"))
    );
    assert!(
        sent.iter().any(|(text, _)| text.contains("\"Invalid\"")),
        "a stranger's idTag is refused"
    );
    assert!(
        sent.iter()
            .any(|(text, _)| text.contains("UnknownVendorId"))
    );
}

#[test]
fn the_official_schemas_refuse_what_ocpp_forbids() {
    let schemas = schemas();
    let bad = [
        (
            "BootNotificationResponse",
            json!({"status": "Accepted", "currentTime": "2026-11-23T10:00:00Z", "interval": "60"}),
        ),
        (
            "BootNotificationResponse",
            json!({"status": "Welcome", "currentTime": "2026-11-23T10:00:00Z", "interval": 60}),
        ),
        (
            "BootNotificationResponse",
            json!({"status": "Accepted", "interval": 60}),
        ),
        ("HeartbeatResponse", json!({"currentTime": "now"})),
        (
            "RemoteStartTransaction",
            json!({"connectorId": 1, "idTag": "x".repeat(21)}),
        ),
        ("StartTransactionResponse", json!({"transactionId": 1})),
        ("StatusNotificationResponse", json!({"extra": true})),
    ];
    for (name, payload) in bad {
        let result = schemas.check(name, &payload);
        assert!(
            matches!(result, Err(SchemaError::Violation { .. })),
            "{name} {payload}: {result:?}"
        );
    }
    let good =
        json!({"status": "Accepted", "currentTime": "2026-11-23T10:00:00.000Z", "interval": 60});
    assert_eq!(schemas.check("BootNotificationResponse", &good), Ok(()));
}

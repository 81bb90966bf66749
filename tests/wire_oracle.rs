//! The wire oracles (I12) pass a CSMS that keeps OCPP-J's rules on a connection and name
//! each way of breaking them: two CALLs outstanding (judged on the node's clock), a reused
//! message id, an answer to a CALL it never got, a malformed frame, a payload its schema
//! refuses (judged at the station's socket).

use evsource::oracles::protocol::{CallDiscipline, CallTiming, WireOracle};

const TIMING: CallTiming = CallTiming {
    call_timeout_millis: 5_000,
    slack_millis: 50,
};

fn remote_start(id: &str, tag: &str) -> String {
    format!(r#"[2,"{id}","RemoteStartTransaction",{{"connectorId":1,"idTag":"{tag}"}}]"#)
}

fn accepted(id: &str) -> String {
    format!(r#"[3,"{id}",{{"status":"Accepted"}}]"#)
}

fn oracle() -> WireOracle {
    let mut oracle = WireOracle::new("CP1");
    oracle.connected();
    oracle
}

fn violations(oracle: &WireOracle) -> Vec<String> {
    oracle.violations().0.to_vec()
}

#[test]
fn a_conforming_exchange_passes() {
    let mut wire = oracle();
    // The station boots; the CSMS answers it.
    wire.to_csms(r#"[2,"b1","BootNotification",{"chargePointVendor":"v","chargePointModel":"m"}]"#);
    wire.from_csms(
        r#"[3,"b1",{"status":"Accepted","currentTime":"2026-01-01T00:00:00Z","interval":60}]"#,
    );
    // Answered CALLs of the CSMS; the timing rule is the node side's.
    wire.from_csms(&remote_start("m1", "tag-1"));
    wire.to_csms(&accepted("m1"));
    wire.from_csms(&remote_start("m2", "tag-2"));
    wire.from_csms(&remote_start("m3", "tag-3"));
    // Message ids start afresh on a new connection.
    wire.connected();
    wire.from_csms(&remote_start("m1", "tag-4"));
    assert_eq!(violations(&wire), Vec::<String>::new());
    assert_eq!(wire.frames_checked(), 5);
}

#[test]
fn two_calls_outstanding_are_caught_on_the_nodes_clock() {
    let mut node = CallDiscipline::new(TIMING);
    // One at a time: the next after the answer was read, or after the timeout ran out.
    assert_eq!(node.written(&remote_start("m1", "tag-1"), 100), None);
    node.read(&accepted("m1"));
    assert_eq!(node.written(&remote_start("m2", "tag-2"), 200), None);
    assert_eq!(
        node.written(&remote_start("m3", "tag-3"), 200 + 5_000),
        None
    );
    // Answers and the station's own CALLs do not count as the CSMS's CALLs.
    assert_eq!(
        node.written(r#"[3,"h1",{"currentTime":"2026-01-01T00:00:00Z"}]"#, 5_300),
        None
    );
    let broken = node
        .written(&remote_start("m4", "tag-4"), 5_900)
        .expect("m3 is unanswered, 700 ms into its timeout");
    assert!(broken.contains("while its CALL 'm3'"), "{broken}");
}

#[test]
fn a_reused_message_id_is_caught() {
    let mut wire = oracle();
    wire.from_csms(&remote_start("m1", "tag-1"));
    wire.to_csms(&accepted("m1"));
    wire.from_csms(&remote_start("m1", "tag-2"));
    let seen = violations(&wire);
    assert!(
        seen.iter()
            .any(|v| v.contains("reused message id 'm1' for another CALL")),
        "{seen:?}"
    );
}

#[test]
fn an_answer_to_a_call_never_received_is_caught() {
    let mut wire = oracle();
    wire.from_csms(r#"[3,"h9",{"currentTime":"2026-01-01T00:00:00Z"}]"#);
    let seen = violations(&wire);
    assert!(seen.iter().any(|v| v.contains("never sent it")), "{seen:?}");
    // Answered once per time it was handed over; a second answer is one too many.
    wire.to_csms(r#"[2,"h1","Heartbeat",{}]"#);
    wire.from_csms(r#"[3,"h1",{"currentTime":"2026-01-01T00:00:00Z"}]"#);
    wire.from_csms(r#"[3,"h1",{"currentTime":"2026-01-01T00:00:00Z"}]"#);
    let seen = violations(&wire);
    assert!(
        seen.iter()
            .any(|v| v.contains("more often than it received it")),
        "{seen:?}"
    );
}

#[test]
fn malformed_and_schema_invalid_frames_are_caught() {
    let mut wire = oracle();
    wire.from_csms(r#"{"not":"an array"}"#);
    wire.from_csms(&format!(
        r#"[2,"{}","RemoteStartTransaction",{{"idTag":"t"}}]"#,
        "x".repeat(37)
    ));
    // RemoteStartTransaction without its required idTag.
    wire.from_csms(r#"[2,"m9","RemoteStartTransaction",{"connectorId":1}]"#);
    let seen = violations(&wire);
    assert!(
        seen.iter().any(|v| v.contains("malformed frame")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|v| v.contains("1..=36 characters")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|v| v.contains("RemoteStartTransaction CALL") && v.contains("idTag")),
        "{seen:?}"
    );
}

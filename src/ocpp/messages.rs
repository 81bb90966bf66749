//! The OCPP 1.6 message subset this CSMS speaks, with field names and enumerations exactly
//! as the OCPP 1.6 JSON schemas have them. Timestamps stay RFC 3339 strings: the CSMS orders
//! by its own clock and keeps the station's (often wrong) time as data.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::frame::ErrorCode;

/// ChargePointStatus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChargePointStatus {
    Available,
    Preparing,
    Charging,
    SuspendedEVSE,
    SuspendedEV,
    Finishing,
    Reserved,
    Unavailable,
    Faulted,
}

/// ChargePointErrorCode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChargePointErrorCode {
    ConnectorLockFailure,
    EVCommunicationError,
    GroundFailure,
    HighTemperature,
    InternalError,
    LocalListConflict,
    NoError,
    OtherError,
    OverCurrentFailure,
    PowerMeterFailure,
    PowerSwitchFailure,
    ReaderFailure,
    ResetFailure,
    UnderVoltage,
    OverVoltage,
    WeakSignal,
}

/// RegistrationStatus (BootNotification.conf).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationStatus {
    Accepted,
    Pending,
    Rejected,
}

/// RemoteStartStopStatus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteStartStopStatus {
    Accepted,
    Rejected,
}

/// AuthorizationStatus (IdTagInfo.status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthorizationStatus {
    Accepted,
    Blocked,
    Expired,
    Invalid,
    ConcurrentTx,
}

/// StopTransaction.req reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    EmergencyStop,
    EVDisconnected,
    HardReset,
    Local,
    Other,
    PowerLoss,
    Reboot,
    Remote,
    SoftReset,
    UnlockCommand,
    DeAuthorized,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootNotificationReq {
    pub charge_point_vendor: String,
    pub charge_point_model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_point_serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_box_serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imsi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_serial_number: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootNotificationConf {
    pub status: RegistrationStatus,
    pub current_time: String,
    pub interval: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatReq {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatConf {
    pub current_time: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusNotificationReq {
    pub connector_id: u32,
    pub error_code: ChargePointErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    pub status: ChargePointStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_error_code: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmptyConf {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteStartTransactionReq {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<u32>,
    pub id_tag: String,
    /// Accepted and ignored: this CSMS sends none and the simulated station applies none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging_profile: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteStartTransactionConf {
    pub status: RemoteStartStopStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdTagInfo {
    pub status: AuthorizationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id_tag: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartTransactionReq {
    pub connector_id: u32,
    pub id_tag: String,
    pub meter_start: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<i64>,
    pub timestamp: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartTransactionConf {
    pub id_tag_info: IdTagInfo,
    pub transaction_id: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopTransactionReq {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_tag: Option<String>,
    pub meter_stop: i64,
    pub timestamp: String,
    pub transaction_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// MeterValue objects; kept as data, not interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_data: Option<Vec<Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopTransactionConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_tag_info: Option<IdTagInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizeReq {
    pub id_tag: String,
}

/// Meter readings during a transaction. Accepted and answered; the samples are not
/// interpreted by this CSMS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeterValuesReq {
    pub connector_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<i64>,
    pub meter_value: Vec<Value>,
}

/// A vendor-specific message. This CSMS knows no vendor extensions: it answers
/// `UnknownVendorId`, as OCPP 1.6 prescribes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataTransferReq {
    pub vendor_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// Maximum lengths of the CiString fields of the subset (OCPP 1.6 JSON schemas).
const STRING_LIMITS: &[(&str, usize)] = &[
    ("chargePointVendor", 20),
    ("chargePointModel", 20),
    ("chargePointSerialNumber", 25),
    ("chargeBoxSerialNumber", 25),
    ("firmwareVersion", 50),
    ("iccid", 20),
    ("imsi", 20),
    ("meterType", 25),
    ("meterSerialNumber", 25),
    ("info", 50),
    ("vendorId", 255),
    ("vendorErrorCode", 50),
    ("idTag", 20),
    ("parentIdTag", 20),
    ("messageId", 50),
];

/// Why a CALL's payload is not a valid message: the CALLERROR code and a description.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct PayloadError {
    pub code: ErrorCode,
    pub description: String,
}

/// Decodes a payload into `T`, mapping failures onto the OCPP-J error codes: a missing
/// required field is an occurrence violation, a wrong JSON type a type violation, a value
/// outside an enumeration or over a length limit a property violation.
pub fn decode_payload<T: DeserializeOwned>(
    action: &str,
    payload: &Value,
) -> Result<T, PayloadError> {
    check_string_lengths(payload)?;
    serde_json::from_value(payload.clone()).map_err(|e| {
        let message = e.to_string();
        let code = if message.starts_with("missing field") {
            ErrorCode::OccurenceConstraintViolation
        } else if message.starts_with("invalid type") {
            ErrorCode::TypeConstraintViolation
        } else if message.starts_with("unknown variant") || message.starts_with("invalid value") {
            ErrorCode::PropertyConstraintViolation
        } else {
            ErrorCode::FormationViolation
        };
        PayloadError {
            code,
            description: format!("{action}: {message}"),
        }
    })
}

fn check_string_lengths(payload: &Value) -> Result<(), PayloadError> {
    let Value::Object(fields) = payload else {
        return Ok(());
    };
    for (name, value) in fields {
        if let (Some(&(_, limit)), Some(text)) = (
            STRING_LIMITS.iter().find(|(field, _)| field == name),
            value.as_str(),
        ) && text.chars().count() > limit
        {
            return Err(PayloadError {
                code: ErrorCode::PropertyConstraintViolation,
                description: format!("{name} is longer than {limit} characters"),
            });
        }
        if value.is_object() {
            check_string_lengths(value)?;
        }
    }
    Ok(())
}

/// A request a charge point sends to the CSMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StationRequest {
    BootNotification(BootNotificationReq),
    Heartbeat(HeartbeatReq),
    StatusNotification(StatusNotificationReq),
    StartTransaction(StartTransactionReq),
    StopTransaction(StopTransactionReq),
    Authorize(AuthorizeReq),
    MeterValues(MeterValuesReq),
    DataTransfer(DataTransferReq),
}

/// Actions of OCPP 1.6 that exist but that this CSMS does not implement: answered with
/// `NotImplemented` (unknown names too), never with silence.
impl StationRequest {
    pub fn action(&self) -> &'static str {
        match self {
            StationRequest::BootNotification(_) => "BootNotification",
            StationRequest::Heartbeat(_) => "Heartbeat",
            StationRequest::StatusNotification(_) => "StatusNotification",
            StationRequest::StartTransaction(_) => "StartTransaction",
            StationRequest::StopTransaction(_) => "StopTransaction",
            StationRequest::Authorize(_) => "Authorize",
            StationRequest::MeterValues(_) => "MeterValues",
            StationRequest::DataTransfer(_) => "DataTransfer",
        }
    }

    pub fn decode(action: &str, payload: &Value) -> Result<StationRequest, PayloadError> {
        Ok(match action {
            "BootNotification" => {
                StationRequest::BootNotification(decode_payload(action, payload)?)
            }
            "Heartbeat" => StationRequest::Heartbeat(decode_payload(action, payload)?),
            "StatusNotification" => {
                StationRequest::StatusNotification(decode_payload(action, payload)?)
            }
            "StartTransaction" => {
                StationRequest::StartTransaction(decode_payload(action, payload)?)
            }
            "StopTransaction" => StationRequest::StopTransaction(decode_payload(action, payload)?),
            "Authorize" => StationRequest::Authorize(decode_payload(action, payload)?),
            "MeterValues" => {
                let request: MeterValuesReq = decode_payload(action, payload)?;
                if request.meter_value.is_empty() {
                    return Err(PayloadError {
                        code: ErrorCode::OccurenceConstraintViolation,
                        description: "MeterValues: meterValue needs at least one entry".into(),
                    });
                }
                StationRequest::MeterValues(request)
            }
            "DataTransfer" => StationRequest::DataTransfer(decode_payload(action, payload)?),
            other => {
                return Err(PayloadError {
                    code: ErrorCode::NotImplemented,
                    description: format!("action {other} is not implemented"),
                });
            }
        })
    }

    pub fn payload(&self) -> Value {
        let value = match self {
            StationRequest::BootNotification(req) => serde_json::to_value(req),
            StationRequest::Heartbeat(req) => serde_json::to_value(req),
            StationRequest::StatusNotification(req) => serde_json::to_value(req),
            StationRequest::StartTransaction(req) => serde_json::to_value(req),
            StationRequest::StopTransaction(req) => serde_json::to_value(req),
            StationRequest::Authorize(req) => serde_json::to_value(req),
            StationRequest::MeterValues(req) => serde_json::to_value(req),
            StationRequest::DataTransfer(req) => serde_json::to_value(req),
        };
        value.expect("messages always serialise")
    }
}

#[cfg(test)]
mod tests {
    //! Golden payloads in the shapes of the OCPP 1.6 JSON schemas, and their error codes.
    use serde_json::json;

    use super::*;

    #[test]
    fn golden_station_requests_decode() {
        let status = StationRequest::decode(
            "StatusNotification",
            &json!({"connectorId": 1, "errorCode": "UnderVoltage", "status": "Faulted", "timestamp": "1970-01-01T00:00:05Z"}),
        )
        .unwrap();
        assert_eq!(
            status,
            StationRequest::StatusNotification(StatusNotificationReq {
                connector_id: 1,
                error_code: ChargePointErrorCode::UnderVoltage,
                info: None,
                status: ChargePointStatus::Faulted,
                timestamp: Some("1970-01-01T00:00:05Z".into()),
                vendor_id: None,
                vendor_error_code: None,
            })
        );
        let start = StationRequest::decode(
            "StartTransaction",
            &json!({"connectorId": 2, "idTag": "u-1f3a", "meterStart": 1200, "timestamp": "2026-11-23T10:00:00Z"}),
        )
        .unwrap();
        assert_eq!(
            start.payload(),
            json!({"connectorId": 2, "idTag": "u-1f3a", "meterStart": 1200, "timestamp": "2026-11-23T10:00:00Z"})
        );
        let stop = StationRequest::decode(
            "StopTransaction",
            &json!({"meterStop": 1500, "timestamp": "2026-11-23T11:00:00Z", "transactionId": 7, "reason": "EVDisconnected"}),
        )
        .unwrap();
        assert!(matches!(
            stop,
            StationRequest::StopTransaction(StopTransactionReq {
                reason: Some(Reason::EVDisconnected),
                ..
            })
        ));
        assert_eq!(
            StationRequest::decode("Heartbeat", &json!({})).unwrap(),
            StationRequest::Heartbeat(HeartbeatReq {})
        );
    }

    #[test]
    fn csms_messages_serialise_with_schema_field_names() {
        let conf = BootNotificationConf {
            status: RegistrationStatus::Accepted,
            current_time: "2026-11-23T10:00:00Z".into(),
            interval: 300,
        };
        assert_eq!(
            serde_json::to_value(&conf).unwrap(),
            json!({"status": "Accepted", "currentTime": "2026-11-23T10:00:00Z", "interval": 300})
        );
        let remote = RemoteStartTransactionReq {
            connector_id: Some(1),
            id_tag: "u-1f3a".into(),
            charging_profile: None,
        };
        assert_eq!(
            serde_json::to_value(&remote).unwrap(),
            json!({"connectorId": 1, "idTag": "u-1f3a"})
        );
        let start_conf = StartTransactionConf {
            id_tag_info: IdTagInfo {
                status: AuthorizationStatus::Accepted,
                expiry_date: None,
                parent_id_tag: None,
            },
            transaction_id: 42,
        };
        assert_eq!(
            serde_json::to_value(&start_conf).unwrap(),
            json!({"idTagInfo": {"status": "Accepted"}, "transactionId": 42})
        );
        assert_eq!(
            serde_json::from_value::<RemoteStartTransactionConf>(json!({"status": "Rejected"}))
                .unwrap()
                .status,
            RemoteStartStopStatus::Rejected
        );
    }

    #[test]
    fn invalid_payloads_get_the_right_error_code() {
        let cases = [
            (
                "StatusNotification",
                json!({"connectorId": 1, "status": "Available"}),
                ErrorCode::OccurenceConstraintViolation,
            ),
            (
                "StatusNotification",
                json!({"connectorId": "one", "errorCode": "NoError", "status": "Available"}),
                ErrorCode::TypeConstraintViolation,
            ),
            (
                "StatusNotification",
                json!({"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"}),
                ErrorCode::PropertyConstraintViolation,
            ),
            (
                "StartTransaction",
                json!({"connectorId": 1, "idTag": "x".repeat(21), "meterStart": 0, "timestamp": "t"}),
                ErrorCode::PropertyConstraintViolation,
            ),
            (
                "BootNotification",
                json!({"chargePointVendor": "v", "chargePointModel": "m", "colour": "red"}),
                ErrorCode::FormationViolation,
            ),
            (
                "DataTransfer",
                json!({"messageId": "x"}),
                ErrorCode::OccurenceConstraintViolation,
            ),
            (
                "MeterValues",
                json!({"connectorId": 1, "meterValue": []}),
                ErrorCode::OccurenceConstraintViolation,
            ),
            (
                "Authorize",
                json!({"idTag": 7}),
                ErrorCode::TypeConstraintViolation,
            ),
            ("GetConfiguration", json!({}), ErrorCode::NotImplemented),
            ("NoSuchAction", json!({}), ErrorCode::NotImplemented),
        ];
        for (action, payload, code) in cases {
            let error = StationRequest::decode(action, &payload).unwrap_err();
            assert_eq!(
                error.code, code,
                "{action} {payload}: {}",
                error.description
            );
        }
    }

    #[test]
    fn every_status_and_error_code_has_its_schema_spelling() {
        let statuses: Vec<String> = serde_json::from_value(json!([
            "Available",
            "Preparing",
            "Charging",
            "SuspendedEVSE",
            "SuspendedEV",
            "Finishing",
            "Reserved",
            "Unavailable",
            "Faulted"
        ]))
        .map(|v: Vec<ChargePointStatus>| {
            v.iter()
                .map(|s| {
                    serde_json::to_value(s)
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        })
        .unwrap();
        assert_eq!(statuses.len(), 9);
        let codes: Vec<ChargePointErrorCode> = serde_json::from_value(json!([
            "ConnectorLockFailure",
            "EVCommunicationError",
            "GroundFailure",
            "HighTemperature",
            "InternalError",
            "LocalListConflict",
            "NoError",
            "OtherError",
            "OverCurrentFailure",
            "PowerMeterFailure",
            "PowerSwitchFailure",
            "ReaderFailure",
            "ResetFailure",
            "UnderVoltage",
            "OverVoltage",
            "WeakSignal"
        ]))
        .unwrap();
        assert_eq!(codes.len(), 16);
    }
}

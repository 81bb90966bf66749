//! Who may connect: the charge point registry and OCPP security profile 1 (HTTP Basic
//! authentication on the WebSocket upgrade, username = charge point id, password = the
//! station's AuthorizationKey).
//!
//! Registrations are events: `ChargePointRegistered { password_hash }` on the stream
//! `chargepoint-<id>`; the last one counts, so registering again rotates the password.
//! Every node sharing the store sees every registration. Passwords are stored only as
//! Argon2id hashes in PHC string form, which carry their own salt and cost, so the cost
//! can be raised later without invalidating what is stored.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::core::types::{
    CurrentVersion, EventData, EventId, ExpectedVersion, Metadata, StreamId, hash128,
};
use crate::store::{AppendError, EventStore, ReadError};

/// Longest charge point id accepted (OCPP 2.0.1's identifierString bound; 1.6 sets none).
pub const STATION_ID_BYTES_MAX: usize = 48;
/// Shortest and longest password accepted. Security profile 1 asks for an AuthorizationKey
/// of 16 to 20 bytes, often configured as 32 to 40 hexadecimal digits: both fit.
pub const PASSWORD_BYTES_MIN: usize = 16;
pub const PASSWORD_BYTES_MAX: usize = 40;
const REGISTERED: &str = "ChargePointRegistered";

/// How expensive a password hash is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordCost {
    /// Argon2id with 19 MiB, 2 passes (OWASP's recommendation): for real deployments.
    Standard,
    /// Argon2id at its minimum cost: for simulations that register thousands of stations.
    /// Never use it for passwords that matter.
    Minimal,
}

impl PasswordCost {
    fn params(self) -> Params {
        let (memory_kib, passes) = match self {
            PasswordCost::Standard => (19 * 1024, 2),
            PasswordCost::Minimal => (Params::MIN_M_COST, 1),
        };
        Params::new(memory_kib, passes, 1, None).expect("valid Argon2 parameters")
    }
}

/// Why a charge point id or password is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "charge point id must be 1 to {STATION_ID_BYTES_MAX} characters of A-Z a-z 0-9 . _ ~ -"
    )]
    StationId,
    #[error(
        "password must be {PASSWORD_BYTES_MIN} to {PASSWORD_BYTES_MAX} printable ASCII characters"
    )]
    Password,
}

/// A charge point id usable in a URL path and as part of a stream id, unescaped.
pub fn check_station_id(id: &str) -> Result<(), CredentialError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-');
    if id.is_empty() || id.len() > STATION_ID_BYTES_MAX || !id.bytes().all(allowed) {
        return Err(CredentialError::StationId);
    }
    Ok(())
}

pub fn check_password(password: &str) -> Result<(), CredentialError> {
    let printable = password.bytes().all(|b| b.is_ascii_graphic());
    if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) || !printable {
        return Err(CredentialError::Password);
    }
    Ok(())
}

/// Hashes `password` with the given salt (16 bytes; from the caller's seeded or OS
/// randomness: only uniqueness matters) into a PHC string.
pub fn hash_password(password: &str, salt: [u8; 16], cost: PasswordCost) -> String {
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, cost.params())
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 accepts any password and a valid salt")
        .to_string()
}

/// A fresh salt from the caller's generator.
pub fn salt_from(env: &mut impl crate::environment::Environment) -> [u8; 16] {
    let mut salt = [0u8; 16];
    salt[..8].copy_from_slice(&env.random_u64().to_le_bytes());
    salt[8..].copy_from_slice(&env.random_u64().to_le_bytes());
    salt
}

/// Checks `password` against a stored PHC string, in constant time. A malformed hash
/// verifies nothing.
pub fn verify_password(phc: &str, password: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// The `user:password` pair of an `Authorization: Basic …` header value.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = data_encoding::BASE64
        .decode(encoded.trim().as_bytes())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The value of an `Authorization` header for Basic authentication.
pub fn basic_header(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!("Basic {}", data_encoding::BASE64.encode(pair.as_bytes()))
}

/// Compares two secrets without leaking where they differ through timing.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (x, y) in a.iter().zip(b.iter()) {
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

#[derive(Serialize, Deserialize)]
struct Registration {
    password_hash: String,
}

fn registry_stream(station: &str) -> Result<StreamId, CredentialError> {
    check_station_id(station)?;
    StreamId::new(&format!("chargepoint-{station}")).map_err(|_| CredentialError::StationId)
}

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("recording the registration failed: {0}")]
    Append(#[from] AppendError),
}

/// Registers `station` (or rotates its password) with an already computed hash.
/// Registering the same hash again is an idempotent success.
pub async fn register<S: EventStore>(
    store: &S,
    station: &str,
    password_hash: &str,
    now_millis: u64,
) -> Result<(), RegisterError> {
    let stream = registry_stream(station)?;
    let payload = serde_json::to_vec(&Registration {
        password_hash: password_hash.to_owned(),
    })
    .expect("serialises");
    let id = EventId(hash128(
        format!("register\u{1f}{station}\u{1f}{password_hash}").as_bytes(),
    ));
    let event = EventData {
        id,
        event_type: REGISTERED.to_owned(),
        tags: Vec::new(),
        metadata: Metadata {
            recorded_at_millis: now_millis,
            ..Metadata::default()
        },
        payload,
    };
    store
        .append(&stream, ExpectedVersion::Any, vec![event])
        .await?;
    Ok(())
}

/// The current password hash of `station`, or `None` if it is not registered.
pub async fn registered_hash<S: EventStore>(
    store: &S,
    station: &str,
) -> Result<Option<String>, ReadError> {
    let Ok(stream) = registry_stream(station) else {
        return Ok(None);
    };
    let CurrentVersion::Current(last) = store.current_version(&stream).await? else {
        return Ok(None);
    };
    let events = store.read_stream(&stream, last, 1).await?;
    Ok(events
        .first()
        .filter(|e| e.event_type == REGISTERED)
        .and_then(|e| serde_json::from_slice::<Registration>(&e.payload).ok())
        .map(|r| r.password_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let hash = hash_password("0123456789abcdef", [7; 16], PasswordCost::Minimal);
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            !hash.contains("0123456789abcdef"),
            "the password is not stored"
        );
        assert!(verify_password(&hash, "0123456789abcdef"));
        assert!(!verify_password(&hash, "0123456789abcdeF"));
        assert!(!verify_password(&hash, ""));
        assert!(!verify_password("not a hash", "0123456789abcdef"));
        let other_salt = hash_password("0123456789abcdef", [8; 16], PasswordCost::Minimal);
        assert_ne!(hash, other_salt, "the salt changes the hash");
    }

    #[test]
    fn basic_credentials_round_trip_and_other_schemes_are_refused() {
        let header = basic_header("CP-1", "secret:with:colons");
        assert_eq!(header, "Basic Q1AtMTpzZWNyZXQ6d2l0aDpjb2xvbnM=");
        assert_eq!(
            parse_basic(&header),
            Some(("CP-1".into(), "secret:with:colons".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic bm9jb2xvbg=="), None, "no colon");
    }

    #[test]
    fn ids_and_passwords_are_checked() {
        assert!(check_station_id("CP-1_a.b~c").is_ok());
        for bad in ["", "a b", "a/b", "a%20", &"x".repeat(49)] {
            assert_eq!(
                check_station_id(bad),
                Err(CredentialError::StationId),
                "{bad}"
            );
        }
        assert!(check_password(&"p".repeat(16)).is_ok());
        assert!(check_password(&"p".repeat(40)).is_ok());
        for bad in [
            "p".repeat(15),
            "p".repeat(41),
            format!("{} x", "p".repeat(16)),
        ] {
            assert_eq!(check_password(&bad), Err(CredentialError::Password));
        }
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(secrets_equal(b"token", b"token"));
        assert!(!secrets_equal(b"token", b"tokeN"));
        assert!(!secrets_equal(b"token", b"token2"));
        assert!(!secrets_equal(b"", b"x"));
    }
}

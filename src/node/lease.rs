//! Dispatch leases: which node may act for a station, kept in the shared store.
//!
//! Several nodes share one store; a station is connected to at most one of them, and only
//! that node can reach it. The node a station connects to *takes* the station's lease by
//! appending `DispatchLeaseTaken { node }` to `lease-<station>`: the lease belongs to the
//! node named by the stream's latest event, and the event's global position is the lease's
//! **fencing token**. Whatever the holder records for the station — an unlock's outcome —
//! it appends with the condition "no lease event for this station after my token"
//! ([`fence`]), which the store checks atomically with the append. A node that lost the
//! lease while paused, partitioned or dying therefore cannot record anything once another
//! node has taken over, however stale its own view is; and it stops dispatching as soon as
//! it reads the newer lease event.
//!
//! Taking over needs no expiry: a station reconnects only after its old connection is
//! gone, so the new connection is the proof that the old holder can no longer reach it.
//! Pure: building and reading lease events; the hub does the I/O.

use crate::core::types::{
    AppendCondition, EventData, EventId, GlobalPosition, Metadata, Query, QueryItem, RecordedEvent,
    StreamId, StreamIdError, hash128,
};

/// The event type of a lease taken.
pub const LEASE_TAKEN: &str = "DispatchLeaseTaken";
const STREAM_PREFIX: &str = "lease-";

/// `lease-<station>`.
pub fn stream(station: &str) -> Result<StreamId, StreamIdError> {
    StreamId::new(&format!("{STREAM_PREFIX}{station}"))
}

fn tag(station: &str) -> String {
    format!("lease:{station}")
}

/// `node` takes `station`'s lease. `take` tells this node's takes apart (a fresh number per
/// take), so that a retry of the same take after an unknown outcome is idempotent.
pub fn taken(station: &str, node: &str, take: u64, now_millis: u64) -> EventData {
    EventData {
        id: EventId(hash128(
            format!("lease\u{1f}{station}\u{1f}{node}\u{1f}{take}").as_bytes(),
        )),
        event_type: LEASE_TAKEN.to_owned(),
        tags: vec![tag(station)],
        metadata: Metadata {
            recorded_at_millis: now_millis,
            ..Metadata::default()
        },
        payload: node.as_bytes().to_vec(),
    }
}

/// A lease event read from the store: whose station, which node, and its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTaken {
    pub station: String,
    pub node: String,
    pub token: GlobalPosition,
}

/// The lease event `event` is, if it is one.
pub fn read(event: &RecordedEvent) -> Option<LeaseTaken> {
    let station = event.stream.as_str().strip_prefix(STREAM_PREFIX)?;
    if event.event_type != LEASE_TAKEN {
        return None;
    }
    Some(LeaseTaken {
        station: station.to_owned(),
        node: String::from_utf8(event.payload.clone()).ok()?,
        token: event.position,
    })
}

/// The condition that fences an append by the holder of `station`'s lease with `token`:
/// it fails once a later lease event for the station exists.
pub fn fence(station: &str, token: GlobalPosition) -> AppendCondition {
    AppendCondition {
        query: Query {
            items: vec![QueryItem {
                event_types: vec![LEASE_TAKEN.to_owned()],
                tags: vec![tag(station)],
            }],
        },
        after: Some(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{ExpectedVersion, StreamVersion};
    use crate::store::{AppendError, EventStore, MemoryStore};

    fn outcome(id: u128) -> EventData {
        EventData {
            id: EventId(id),
            event_type: "UnlockAccepted".into(),
            tags: Vec::new(),
            metadata: Metadata::default(),
            payload: Vec::new(),
        }
    }

    /// The fence admits the holder's appends until another node takes the lease, then
    /// refuses them — whatever the old holder believes — and admits the new holder's.
    /// Another station's lease does not touch it.
    #[tokio::test]
    async fn a_newer_lease_fences_the_old_holder() {
        let store = MemoryStore::default();
        let station = StreamId::new("station-CP1").expect("stream");
        let lease = stream("CP1").expect("stream");
        let first = store
            .append(&lease, ExpectedVersion::Any, vec![taken("CP1", "a", 1, 0)])
            .await
            .expect("take");
        let a = fence("CP1", first.first_position);
        store
            .append_if(&station, ExpectedVersion::Any, vec![outcome(1)], Some(&a))
            .await
            .expect("the holder records");
        let other = stream("CP2").expect("stream");
        store
            .append(&other, ExpectedVersion::Any, vec![taken("CP2", "b", 1, 0)])
            .await
            .expect("another station's lease");
        store
            .append_if(&station, ExpectedVersion::Any, vec![outcome(2)], Some(&a))
            .await
            .expect("still the holder");
        let second = store
            .append(&lease, ExpectedVersion::Any, vec![taken("CP1", "b", 1, 0)])
            .await
            .expect("take over");
        let refused = store
            .append_if(&station, ExpectedVersion::Any, vec![outcome(3)], Some(&a))
            .await;
        assert_eq!(
            refused,
            Err(AppendError::ConditionFailed {
                position: second.first_position
            })
        );
        let b = fence("CP1", second.first_position);
        store
            .append_if(&station, ExpectedVersion::Any, vec![outcome(3)], Some(&b))
            .await
            .expect("the new holder records");
        let read_back = store
            .read_stream(&lease, StreamVersion(0), 10)
            .await
            .expect("read");
        let holders: Vec<_> = read_back.iter().filter_map(read).collect();
        assert_eq!(
            holders.iter().map(|l| l.node.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(holders[1].token, second.first_position);
        assert_eq!(holders[1].station, "CP1");
    }
}

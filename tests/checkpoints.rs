//! Dispatcher checkpoints of nodes sharing a store: each node's saves are its own. A
//! checkpoint id made from the position alone collided across nodes — a node started
//! under a new id replays history and saves the positions an earlier node saved, and every
//! such save was refused as "already stored, not an exact retry" (one warning per save).

use evsource::core::{EventData, ExpectedVersion, GlobalPosition, Metadata, StreamId};
use evsource::node::checkpoint_event_id;
use evsource::store::{EventStore, MemoryStore};

fn save(node: &str, position: u64) -> (StreamId, Vec<EventData>) {
    let stream = StreamId::new(&format!("checkpoint-dispatcher-{node}")).unwrap();
    let data = EventData {
        id: checkpoint_event_id(node, GlobalPosition(position)),
        event_type: "CheckpointSaved".into(),
        tags: Vec::new(),
        metadata: Metadata::default(),
        payload: position.to_le_bytes().to_vec(),
    };
    (stream, vec![data])
}

#[tokio::test]
async fn two_nodes_save_the_same_position_and_a_repeat_is_an_exact_retry() {
    let store = MemoryStore::default();
    for node in ["node-a", "node-b"] {
        let (stream, events) = save(node, 41);
        let first = store
            .append(&stream, ExpectedVersion::Any, events.clone())
            .await
            .unwrap_or_else(|e| panic!("{node} saves position 41: {e}"));
        assert!(first.written);
        let again = store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .expect("saving the same checkpoint again is an exact retry");
        assert!(!again.written);
    }
}

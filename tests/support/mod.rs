//! Helpers shared by the integration tests: temporary directories and event builders.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use evsource::core::{EventData, EventId, Metadata, StreamId};

/// A directory removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "evsource-test-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid stream id")
}

/// An event with id `id`, type `Type<id % 3>` and a payload derived from the id.
pub fn event(id: u128) -> EventData {
    EventData {
        id: EventId(id),
        event_type: format!("Type{}", id % 3),
        tags: Vec::new(),
        metadata: Metadata {
            recorded_at_millis: 1_000 + id as u64,
            ..Metadata::default()
        },
        payload: format!("payload-{id}").into_bytes(),
    }
}

pub fn tagged(id: u128, event_type: &str, tags: &[&str]) -> EventData {
    EventData {
        event_type: event_type.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..event(id)
    }
}

pub fn events(ids: std::ops::Range<u128>) -> Vec<EventData> {
    ids.map(event).collect()
}

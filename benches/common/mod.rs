//! What the bench binaries share. Each binary uses a part of it.
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The runtime every async bench runs on: two workers, one per core of the machine, as the
/// `evsource` binary would have.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Bytes of the floors' preallocated file: one log segment's worth.
pub const PREALLOCATED_BYTES: u64 = 64 * 1024 * 1024;

/// A fresh directory `evsource-bench-<name>-<pid>` under the temp directory, and in it a
/// file of [`PREALLOCATED_BYTES`] real zeros, synced: the log's file kind, which the
/// floors write into.
pub fn preallocated_file(name: &str) -> (PathBuf, std::fs::File) {
    let dir = std::env::temp_dir().join(format!("evsource-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let file = std::fs::File::create(Path::new(&dir).join("preallocated")).expect("create");
    let zeros = vec![0u8; 1024 * 1024];
    for offset in (0..PREALLOCATED_BYTES).step_by(zeros.len()) {
        file.write_all_at(&zeros, offset).expect("zero-fill");
    }
    file.sync_all().expect("sync");
    (dir, file)
}

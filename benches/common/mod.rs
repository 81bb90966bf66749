//! What the bench binaries share.

/// The runtime every async bench runs on: two workers, one per core of the machine, as the
/// `evsource` binary would have.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

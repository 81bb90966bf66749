//! [`SimDisk`]: an in-memory [`Storage`] that misbehaves on request, deterministically.
//!
//! Each file keeps two images: what a reader sees now, and what is durable (synced). A
//! [`crash`](SimDisk::crash) throws the difference away — optionally keeping a prefix of
//! the unsynced writes, which tears the last one kept at any byte. Syncs can be made to
//! fail, reads to return flipped bits, and stored bytes can be damaged at rest. The disk
//! draws no random numbers: the caller (a test or the simulator) decides every fault.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Spare, Storage, StorageFile};

/// Faults that stay in force until changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimDiskFaults {
    /// Every sync fails while set, and the writes it should have made durable never will
    /// be: they read back until a crash, then they are gone (the "fsyncgate" semantics).
    pub fail_syncs: bool,
    /// Reads that cover `(file, offset)` see that byte with its lowest bit flipped.
    pub flip_on_read: Option<(String, u64)>,
    /// Like `flip_on_read`, but only the next read that covers the byte: a transient
    /// read fault. The fault clears itself once it has struck.
    pub flip_next_read: Option<(String, u64)>,
    /// A slow disk: every sync takes this long (in the simulator's virtual time).
    pub sync_latency: std::time::Duration,
}

/// Counters for tests that check how the log uses the disk (e.g. group commit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    pub writes: u64,
    pub syncs: u64,
    pub crashes: u64,
    /// One-shot read flips (`flip_next_read`) that struck a read.
    pub flips_struck: u64,
}

/// A file of `len` bytes. The images hold only the bytes up to the furthest write; the
/// rest reads as zeros (a preallocated segment costs nothing until written).
#[derive(Debug, Default)]
struct SimFile {
    len: u64,
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, oldest first.
    unsynced: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct DiskState {
    files: BTreeMap<String, SimFile>,
    /// Bumped by every crash; handles from an older generation fail.
    generation: u64,
    faults: SimDiskFaults,
    stats: SimDiskStats,
}

/// An in-memory disk. Clones share the same disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

fn stale_handle() -> io::Error {
    io::Error::other("simulated disk crashed since this file was opened")
}

fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(data);
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_faults(&self, faults: SimDiskFaults) {
        self.lock().faults = faults;
    }

    /// The faults in force now (a one-shot flip that struck is gone).
    pub fn faults(&self) -> SimDiskFaults {
        self.lock().faults.clone()
    }

    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats
    }

    /// Loses power: every file reverts to its durable image plus the first
    /// `keep_unsynced_bytes` bytes of its unsynced writes, in write order (the last write
    /// kept may be torn at any byte). Open handles become stale.
    pub fn crash(&self, keep_unsynced_bytes: u64) {
        let mut state = self.lock();
        state.generation += 1;
        state.stats.crashes += 1;
        for file in state.files.values_mut() {
            let mut budget = keep_unsynced_bytes;
            for (offset, data) in std::mem::take(&mut file.unsynced) {
                if budget == 0 {
                    break;
                }
                let kept = (data.len() as u64).min(budget) as usize;
                write_into(&mut file.durable, offset, &data[..kept]);
                budget -= kept as u64;
            }
            file.current = file.durable.clone();
        }
    }

    /// The bytes a reader of `name` would see now.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().files.get(name).map(|f| {
            let mut bytes = f.current.clone();
            bytes.resize(f.len as usize, 0);
            bytes
        })
    }

    /// The length of `name` up to its last non-zero byte, as a reader sees it now:
    /// how much of a preallocated (zero-filled) file was written. Scans without copying;
    /// `None` for a missing or all-zero file.
    pub fn written_len(&self, name: &str) -> Option<u64> {
        let state = self.lock();
        let bytes = &state.files.get(name)?.current;
        super::last_nonzero(bytes).map(|last| last as u64 + 1)
    }

    /// Replaces `name`'s content, durably (damage at rest, a truncated copy, …).
    pub fn set_file_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut state = self.lock();
        let file = state.files.entry(name.to_owned()).or_default();
        file.len = bytes.len() as u64;
        file.current = bytes.clone();
        file.durable = bytes;
        file.unsynced.clear();
    }

    pub fn file_names(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }
}

impl Storage for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let state = self.lock();
        if !state.files.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::NotFound, name.to_owned()));
        }
        Ok(Arc::new(SimFileHandle {
            disk: self.clone(),
            name: name.to_owned(),
            generation: state.generation,
        }))
    }

    /// Creation is one atomic step here (nothing is prepared): the file appears whole, its
    /// prefix durable, or not at all.
    fn install(&self, spare: Spare, prefix: &[u8]) -> io::Result<Arc<dyn StorageFile>> {
        let Spare { name, len, .. } = spare;
        let name = name.as_str();
        let mut state = self.lock();
        if state.files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_owned(),
            ));
        }
        let bytes = prefix.to_vec();
        state.stats.syncs += 1;
        state.files.insert(
            name.to_owned(),
            SimFile {
                len: len.max(prefix.len() as u64),
                current: bytes.clone(),
                durable: bytes,
                unsynced: Vec::new(),
            },
        );
        Ok(Arc::new(SimFileHandle {
            disk: self.clone(),
            name: name.to_owned(),
            generation: state.generation,
        }))
    }

    fn describe(&self, name: &str) -> String {
        format!("simdisk:{name}")
    }

    fn sync_latency(&self) -> std::time::Duration {
        self.lock().faults.sync_latency
    }
}

#[derive(Debug)]
struct SimFileHandle {
    disk: SimDisk,
    name: String,
    generation: u64,
}

impl SimFileHandle {
    fn with_file<T>(
        &self,
        f: impl FnOnce(&mut SimFile, &mut SimDiskFaults, &mut SimDiskStats) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.disk.lock();
        if state.generation != self.generation {
            return Err(stale_handle());
        }
        let DiskState {
            files,
            faults,
            stats,
            ..
        } = &mut *state;
        let file = files
            .get_mut(&self.name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, self.name.clone()))?;
        f(file, faults, stats)
    }
}

impl StorageFile for SimFileHandle {
    fn size_bytes(&self) -> io::Result<u64> {
        self.with_file(|file, _, _| Ok(file.len))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let name = self.name.clone();
        self.with_file(|file, faults, stats| {
            let end = offset as usize + buf.len();
            if end as u64 > file.len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read past the end of {name}"),
                ));
            }
            let stored = file.current.len().clamp(offset as usize, end);
            let (held, beyond) = buf.split_at_mut(stored - offset as usize);
            held.copy_from_slice(&file.current[offset as usize..stored]);
            beyond.fill(0);
            if let Some((flip_name, flip_offset)) = &faults.flip_on_read
                && *flip_name == name
                && (offset..end as u64).contains(flip_offset)
            {
                buf[(flip_offset - offset) as usize] ^= 1;
            }
            if let Some((flip_name, flip_offset)) = &faults.flip_next_read
                && *flip_name == name
                && (offset..end as u64).contains(flip_offset)
            {
                buf[(flip_offset - offset) as usize] ^= 1;
                faults.flip_next_read = None;
                stats.flips_struck += 1;
            }
            Ok(())
        })
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.with_file(|file, _, stats| {
            stats.writes += 1;
            write_into(&mut file.current, offset, data);
            file.len = file.len.max(offset + data.len() as u64);
            file.unsynced.push((offset, data.to_vec()));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_file(|file, faults, stats| {
            stats.syncs += 1;
            if faults.fail_syncs {
                // As Linux does after a writeback error: the failed pages are marked
                // clean. They still read back, but no later sync writes them, and a
                // crash loses them.
                file.unsynced.clear();
                return Err(io::Error::other("simulated fsync failure"));
            }
            for (offset, data) in std::mem::take(&mut file.unsynced) {
                write_into(&mut file.durable, offset, &data);
            }
            Ok(())
        })
    }
}

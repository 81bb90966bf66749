//! The file I/O edge of the durable log. Everything the log does to disk goes through
//! [`Storage`] and [`StorageFile`]; [`DirStorage`] is the real thing, [`SimDisk`] a test
//! double that loses unsynced writes at a crash, tears the last write, fails syncs and
//! flips bits on read.

mod dir;
mod sim;

use std::fmt::Debug;
use std::io;
use std::sync::Arc;

pub use dir::DirStorage;
pub use sim::{SimDisk, SimDiskFaults};

/// The page: the unit direct I/O is aligned to (a multiple of every logical block size in
/// use), and the unit the log pads its writes to.
pub(crate) const PAGE_BYTES: usize = 4096;

/// A flat directory of files.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Names of the files present, sorted. Removes what interrupted creates left behind,
    /// unfinished spares of [`prepare`](Self::prepare) included: list before preparing
    /// (the log lists once, when it opens).
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates `name` atomically and durably: once this returns, the file exists with
    /// `len` bytes, `prefix` at offset 0 and zeros after it, even across a crash; before it
    /// returns, a crash leaves no file of that name.
    fn create(&self, name: &str, len: u64, prefix: &[u8]) -> io::Result<Arc<dyn StorageFile>> {
        self.install(self.prepare(name, len)?, prefix)
    }
    /// Does the slow part of a later [`create`](Self::create) of `name` ahead of need —
    /// for real storage, writing and syncing `len` bytes of zeros under a name no listing
    /// shows (a crash leaves nothing of it that the next open keeps). The default prepares
    /// nothing: its [`install`](Self::install) creates the file whole.
    fn prepare(&self, name: &str, len: u64) -> io::Result<Spare> {
        Ok(Spare {
            name: name.to_owned(),
            len,
            file: None,
        })
    }
    /// Finishes what [`prepare`](Self::prepare) began, with the guarantees of
    /// [`create`](Self::create): `prefix` at offset 0, durable, under the spare's name.
    fn install(&self, spare: Spare, prefix: &[u8]) -> io::Result<Arc<dyn StorageFile>>;
    /// How errors name a file: a path for real storage.
    fn describe(&self, name: &str) -> String;

    /// How long a sync takes, for a simulated slow disk; the simulator's flusher lets this
    /// much virtual time pass between a group's write and its sync. Real storage: zero
    /// (the sync itself takes the time).
    fn sync_latency(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A file [`Storage::prepare`]d for a later [`Storage::install`].
#[derive(Debug)]
pub struct Spare {
    name: String,
    len: u64,
    /// What the storage made ready, if anything: the zero-filled file itself.
    file: Option<Arc<dyn StorageFile>>,
}

/// One open file. Offsets are absolute; there is no cursor.
pub trait StorageFile: Send + Sync + Debug {
    fn size_bytes(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
}

/// The index of the last non-zero byte of `bytes`: where the written part of a
/// preallocated, zero-filled file ends. Each chunk is tested with a branch-free OR the
/// compiler vectorises, so scanning a mostly empty segment stays cheap.
pub(crate) fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const CHUNK: usize = 64;
    let chunk = bytes
        .chunks(CHUNK)
        .rposition(|chunk| chunk.iter().fold(0, |any, &b| any | b) != 0)?;
    let start = chunk * CHUNK;
    let within = bytes[start..(start + CHUNK).min(bytes.len())]
        .iter()
        .rposition(|&b| b != 0)?;
    Some(start + within)
}

#[cfg(test)]
mod tests {
    use super::last_nonzero;

    #[test]
    fn last_nonzero_finds_the_end_of_written_data_at_every_offset() {
        assert_eq!(last_nonzero(&[]), None);
        assert_eq!(last_nonzero(&[0; 300]), None);
        for at in [0, 1, 63, 64, 65, 127, 128, 299] {
            let mut bytes = vec![0u8; 300];
            bytes[at] = 7;
            if at > 3 {
                bytes[at - 3] = 1;
            }
            assert_eq!(last_nonzero(&bytes), Some(at), "non-zero byte at {at}");
        }
    }
}

//! [`Storage`] on a real directory, with positioned reads and writes and fdatasync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{PAGE_BYTES, Spare, Storage, StorageFile};

/// Files in one directory of the real file system.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// Uses `dir`, creating it if missing.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<DirStorage> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(DirStorage { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `name` is prepared before it is installed.
    fn temp_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{TEMP_SUFFIX}"))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

const ZERO_CHUNK_BYTES: usize = 1 << 20;
const TEMP_SUFFIX: &str = ".tmp";

/// Fills the first `len` bytes of the file at `path` with zeros through `O_DIRECT`: the
/// zeros go from one aligned buffer to the disk, not through the page cache. `Ok(false)`
/// when that is not possible here — `len` not a whole number of pages, or a file system
/// that refuses direct I/O (tmpfs) — and the caller writes them the ordinary way.
fn fill_zeros_direct(path: &Path, len: u64) -> io::Result<bool> {
    if !len.is_multiple_of(PAGE_BYTES as u64) {
        return Ok(false);
    }
    let file = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
        Err(error) => return Err(error),
    };
    // An allocation one page longer than the buffer holds a page-aligned buffer.
    let backing = vec![0u8; ZERO_CHUNK_BYTES + PAGE_BYTES];
    let skip = (PAGE_BYTES - backing.as_ptr() as usize % PAGE_BYTES) % PAGE_BYTES;
    let zeros = &backing[skip..skip + ZERO_CHUNK_BYTES];
    let mut offset = 0;
    while offset < len {
        let chunk = (len - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        match file.write_all_at(&zeros[..chunk], offset) {
            Ok(()) => {}
            // Opened, but refused at the first write (some file systems check there).
            Err(error) if offset == 0 && error.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(false);
            }
            Err(error) => return Err(error),
        }
        offset += chunk as u64;
    }
    Ok(true)
}

impl Storage for DirStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.ends_with(TEMP_SUFFIX) {
                // Left over from a create interrupted by a crash: never visible, safe to drop.
                fs::remove_file(entry.path())?;
                continue;
            }
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(DirFile { file }))
    }

    fn prepare(&self, name: &str, len: u64) -> io::Result<Spare> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.temp_path(name))?;
        // Real zeros, not a sparse file: overwriting allocated blocks syncs without a
        // metadata update, which roughly doubled durable throughput in the design measurements
        // (ARCHITECTURE.md, "The durable log"). Written around the page cache where the file
        // system allows it: copying a segment's worth of zeros into the cache cost the
        // appenders' cores more than any part of an append did (BENCHMARKS.md).
        if !fill_zeros_direct(&self.temp_path(name), len)? {
            let zeros = vec![0u8; ZERO_CHUNK_BYTES];
            let mut remaining = len;
            while remaining > 0 {
                let chunk = remaining.min(ZERO_CHUNK_BYTES as u64) as usize;
                file.write_all(&zeros[..chunk])?;
                remaining -= chunk as u64;
            }
        }
        file.sync_all()?;
        Ok(Spare {
            name: name.to_owned(),
            len,
            file: Some(Arc::new(DirFile { file })),
        })
    }

    fn install(&self, spare: Spare, prefix: &[u8]) -> io::Result<Arc<dyn StorageFile>> {
        assert!(
            prefix.len() as u64 <= spare.len,
            "prefix longer than the file"
        );
        let final_path = self.dir.join(&spare.name);
        if final_path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", final_path.display()),
            ));
        }
        let file = match spare.file {
            Some(file) => file,
            None => self
                .prepare(&spare.name, spare.len)?
                .file
                .expect("prepared"),
        };
        // The blocks are allocated and synced: the prefix overwrites them and syncs
        // without a metadata update; only then may the file have its name. Written as a
        // whole page (the rest of it zeros, as on disk), so that a page the zero fill left
        // uncached is not read back first.
        let mut page = prefix.to_vec();
        page.resize(prefix.len().max(PAGE_BYTES.min(spare.len as usize)), 0);
        file.write_all_at(&page, 0)?;
        file.sync_data()?;
        fs::rename(self.temp_path(&spare.name), &final_path)?;
        self.sync_dir()?;
        Ok(file)
    }

    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

#[derive(Debug)]
struct DirFile {
    file: File,
}

impl StorageFile for DirFile {
    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> DirStorage {
        let dir = std::env::temp_dir().join(format!("evsource-dir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        DirStorage::new(dir).expect("scratch directory")
    }

    /// A prepared file has no name until installed, then holds the prefix and zeros to
    /// its full length; a spare left uninstalled (a crash) is dropped by the next listing.
    #[test]
    fn a_prepared_file_appears_only_when_installed() {
        let storage = scratch("spare");
        let spare = storage.prepare("a.log", 4096).expect("prepare");
        assert!(!storage.dir().join("a.log").exists());
        let file = storage.install(spare, b"head").expect("install");
        assert_eq!(storage.list().expect("list"), ["a.log"]);
        let mut bytes = vec![1u8; 4096];
        file.read_exact_at(&mut bytes, 0).expect("read");
        assert_eq!(&bytes[..4], b"head");
        assert!(bytes[4..].iter().all(|&b| b == 0));
        assert_eq!(file.size_bytes().expect("size"), 4096);

        let abandoned = storage.prepare("b.log", 4096).expect("prepare");
        drop(abandoned);
        assert!(storage.dir().join("b.log.tmp").exists());
        assert_eq!(storage.list().expect("list"), ["a.log"]);
        assert!(!storage.dir().join("b.log.tmp").exists());

        // Several fill chunks and a short last one (around the page cache where the file
        // system allows it), and a length that is no whole number of pages (through it):
        // either way zeros to the full length, and a write into the middle of a page reads
        // back with the rest of the page still zero.
        for (name, len) in [
            ("c.log", 3 * ZERO_CHUNK_BYTES as u64 + 8192),
            ("d.log", 10_000),
        ] {
            let file = storage
                .install(storage.prepare(name, len).expect("prepare"), b"head")
                .expect("install");
            assert_eq!(file.size_bytes().expect("size"), len, "{name}");
            file.write_all_at(b"record", len - 5000).expect("write");
            let mut bytes = vec![1u8; len as usize];
            file.read_exact_at(&mut bytes, 0).expect("read");
            assert_eq!(&bytes[..4], b"head", "{name}");
            let record = (len - 5000) as usize;
            assert_eq!(&bytes[record..record + 6], b"record", "{name}");
            assert!(bytes[4..record].iter().all(|&b| b == 0), "{name}");
            assert!(bytes[record + 6..].iter().all(|&b| b == 0), "{name}");
        }

        let again = storage.prepare("a.log", 4096).expect("prepare");
        let refused = storage.install(again, b"other").expect_err("a.log exists");
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
        let _ = fs::remove_dir_all(storage.dir());
    }
}

//! [`Storage`] on a real directory, with positioned reads and writes and fdatasync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Storage, StorageFile};

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

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

const ZERO_CHUNK_BYTES: usize = 1 << 20;
const TEMP_SUFFIX: &str = ".tmp";

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

    fn create(&self, name: &str, len: u64, prefix: &[u8]) -> io::Result<Arc<dyn StorageFile>> {
        assert!(prefix.len() as u64 <= len, "prefix longer than the file");
        let temp_path = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let final_path = self.dir.join(name);
        if final_path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", final_path.display()),
            ));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp_path)?;
        // Real zeros, not a sparse file: overwriting allocated blocks syncs without a
        // metadata update, which roughly doubled durable throughput in the design measurements
        // (ARCHITECTURE.md, "The durable log").
        file.write_all(prefix)?;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut remaining = len - prefix.len() as u64;
        while remaining > 0 {
            let chunk = remaining.min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_all(&zeros[..chunk])?;
            remaining -= chunk as u64;
        }
        file.sync_all()?;
        fs::rename(&temp_path, &final_path)?;
        self.sync_dir()?;
        Ok(Arc::new(DirFile { file }))
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

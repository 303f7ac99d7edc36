//! Recycled segment files: the files of deleted segments kept for new ones.
//!
//! A new segment is preallocated with `fallocate`, which gives unwritten
//! extents: every direct write into them is converted by the file system
//! when it completes (a journal transaction per write), while a write over
//! space written before is a plain overwrite. Deleted segments' files
//! therefore go to `<root>/.recycle/` (up to a bound), and new segments of
//! the same size, of any shard on any core, take them from there.
//!
//! A recycled file still holds its earlier batches. They are told apart
//! from new data by generation, not by zeros: the pool file's name carries
//! the highest write generation it was ever written with, and the segment
//! made from it starts above that (its `floor`, kept in the segment
//! table); recovery ends the log at the first batch below the floor.
//!
//! Files move by `rename` (atomic, same file system), so two cores racing
//! for one file cannot both get it, and a crash leaves each file either in
//! the pool or at its segment path. A pool file's generation is that of
//! its segment at deletion, which is the highest any of its batches has
//! (a generation is saved before anything is written with it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the pool lives under the journal's root.
pub const POOL_DIR: &str = ".recycle";

/// A pool of segment files to reuse; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Recycler {
    /// The pool directory; `None`: recycling is off.
    dir: Option<PathBuf>,
    /// Most files kept.
    max_files: usize,
}

/// A file taken from the pool for a new segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recycled {
    /// The highest generation of any batch the file may still hold.
    pub generation: u32,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Recycler {
    /// A pool under `root` keeping at most `max_files` files (0: off).
    pub fn new(root: &Path, max_files: usize) -> Self {
        Recycler {
            dir: (max_files > 0).then(|| root.join(POOL_DIR)),
            max_files,
        }
    }

    /// No recycling: deleted files are removed, new ones preallocated.
    pub fn off() -> Self {
        Recycler::default()
    }

    /// Files in the pool as (path, size, generation).
    fn files(&self) -> Vec<(PathBuf, u64, u32)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let (size, generation) = parse_name(&name)?;
                Some((e.path(), size, generation))
            })
            .collect()
    }

    /// Files in the pool.
    pub fn len(&self) -> usize {
        self.files().len()
    }

    /// Whether the pool holds no file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the log file of a deleted segment into the pool when there is
    /// room and it has its full preallocated `size`; returns whether it
    /// did (the caller removes the file otherwise).
    pub fn retire(&self, log: &Path, size: u64, generation: u32) -> bool {
        let Some(dir) = &self.dir else {
            return false;
        };
        if std::fs::metadata(log).map(|m| m.len()).ok() != Some(size) {
            return false;
        }
        if self.files().len() >= self.max_files || std::fs::create_dir_all(dir).is_err() {
            return false;
        }
        let unique = format!(
            "{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let to = dir.join(format!("{size}-{generation}-{unique}.log"));
        match std::fs::rename(log, &to) {
            Ok(()) => {
                tracing::debug!(from = %log.display(), to = %to.display(), "segment file recycled");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, from = %log.display(), "segment file not recycled");
                false
            }
        }
    }

    /// Moves a pool file of `size` bytes to `dest` (replacing what is
    /// there); `None` when there is none.
    pub fn take(&self, size: u64, dest: &Path) -> Option<Recycled> {
        for (path, len, generation) in self.files() {
            if len != size {
                continue;
            }
            // Another core may win the same file: then try the next one.
            if std::fs::rename(&path, dest).is_ok() {
                return Some(Recycled { generation });
            }
        }
        None
    }
}

/// Removes the pool files of the journal under `root` beyond `max_files`
/// (all of them when recycling is off), so that lowering the bound or
/// turning recycling off gives the space back; run at start, before any
/// core uses the pool.
pub fn trim(root: &Path, max_files: usize) {
    let dir = root.join(POOL_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for (i, e) in entries.flatten().enumerate() {
        if i >= max_files {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(file = %e.path().display(), "recycled segment file removed")
                }
                Err(err) => {
                    tracing::warn!(error = %err, file = %e.path().display(), "recycled segment file not removed")
                }
            }
        }
    }
    if max_files == 0 {
        let _ = std::fs::remove_dir(&dir);
    }
}

/// `<size>-<generation>-<unique>.log` -> (size, generation).
fn parse_name(name: &str) -> Option<(u64, u32)> {
    let stem = name.strip_suffix(".log")?;
    let mut parts = stem.splitn(3, '-');
    let size = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((size, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rj-recycle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn file(path: &Path, len: u64) {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(len).unwrap();
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name("4096-7-1-2-3.log"), Some((4096, 7)));
        assert_eq!(parse_name("4096-7.log"), None);
        assert_eq!(parse_name("x-7-1.log"), None);
        assert_eq!(parse_name("4096-7-1.tmp"), None);
    }

    #[test]
    fn keeps_at_most_max_files_of_the_right_size() {
        let root = tmp("bound");
        let pool = Recycler::new(&root, 2);
        for i in 0..3 {
            let p = root.join(format!("{i}.log"));
            file(&p, 8192);
            assert_eq!(pool.retire(&p, 8192, i + 1), i < 2, "file {i}");
        }
        let short = root.join("short.log");
        file(&short, 4096);
        assert!(!Recycler::new(&root, 9).retire(&short, 8192, 1));
        assert_eq!(pool.len(), 2);
        assert!(pool.take(4096, &root.join("a.log")).is_none());
        let got = pool.take(8192, &root.join("a.log")).unwrap();
        assert!(got.generation == 1 || got.generation == 2);
        assert_eq!(pool.len(), 1);
        assert!(Recycler::off().take(8192, &root.join("b.log")).is_none());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn trim_gives_space_back() {
        let root = tmp("trim");
        let pool = Recycler::new(&root, 3);
        for i in 0..3 {
            let p = root.join(format!("{i}.log"));
            file(&p, 8192);
            assert!(pool.retire(&p, 8192, 1));
        }
        trim(&root, 1);
        assert_eq!(pool.len(), 1);
        trim(&root, 0);
        assert!(!root.join(POOL_DIR).exists());
        trim(&root, 0);
        let _ = std::fs::remove_dir_all(&root);
    }
}

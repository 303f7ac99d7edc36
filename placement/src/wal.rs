//! The write-ahead log's files and the thread that writes them.
//!
//! The log is a sequence of segment files `wal.<seq>` (decimal `seq`,
//! replayed in increasing order; a `wal` file left by an older version is
//! segment 0). Records are `[u32 len][u32 crc32][kind][body]`, little
//! endian, `len` counting the kind byte and the body. Only the last segment
//! is appended to; a new one is started ("rolled") when the state machine is
//! snapshotted and when the current one grows past [`SEGMENT_BYTES`], and
//! whole old segments are deleted once a durable snapshot covers them. The
//! log is never rewritten.
//!
//! One thread ([`LogWriter`]) owns the files. The Raft loop hands it jobs in
//! order (append these bytes, roll, delete old segments); it writes every
//! append waiting in its queue with one `write` and one `fdatasync` and then
//! reports the highest tag it made durable, so the loop can go on taking and
//! proposing requests while the disk works.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam::channel::{self, Receiver, Sender};

use crate::storage::{fsync_dir, io_err, StoreError};

/// A segment grows to about this size before a new one is started.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The name of segment `seq`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    if seq == 0 {
        dir.join("wal")
    } else {
        dir.join(format!("wal.{seq}"))
    }
}

/// The segments in `dir`, in replay order.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "wal" {
            seqs.push(0);
        } else if let Some(seq) = name.strip_prefix("wal.").and_then(|s| s.parse().ok()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Work for the log writer, done in the order given.
#[derive(Debug)]
pub enum Job {
    /// Append records to the current segment; `sync` asks for an fdatasync
    /// before `tag` is reported.
    Append {
        /// Reported back once written.
        tag: u64,
        /// The job's own number (increasing), also reported.
        seq: u64,
        /// Whole records.
        bytes: Vec<u8>,
        /// Whether they must be durable before `tag` is reported.
        sync: bool,
    },
    /// Make everything so far durable, then start segment `seq` with
    /// `header` (whole records) and make it durable too.
    Roll {
        /// The new segment.
        seq: u64,
        /// Its first records.
        header: Vec<u8>,
    },
    /// Delete the segments numbered below `seq`.
    DeleteBelow(u64),
}

/// What the log writer reports.
#[derive(Debug)]
pub enum Done {
    /// Every append up to this one (its tag and number) is written, and
    /// synced when it asked to be.
    Persisted {
        /// The highest tag written.
        tag: u64,
        /// The highest job number written.
        seq: u64,
    },
    /// Writing failed; the writer stopped.
    Failed(String),
}

/// The handle on the log writer thread.
#[derive(Debug)]
pub struct LogWriter {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the writer on segment `seq`, already open as `file`.
    pub fn start(dir: PathBuf, seq: u64, file: File) -> Result<Self, StoreError> {
        let (jobs, rx) = channel::unbounded();
        let (done_tx, done) = channel::unbounded();
        let mut files = Files {
            dir: dir.clone(),
            seq,
            file,
        };
        let thread = std::thread::Builder::new()
            .name("placement-wal".into())
            .spawn(move || files.run(rx, done_tx))
            .map_err(io_err("spawn the log writer for", &dir))?;
        Ok(LogWriter {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Queues a job.
    pub fn submit(&self, job: Job) -> Result<(), StoreError> {
        let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            Err(StoreError::Stopped)
        }
    }

    /// Where the writer reports.
    pub fn done(&self) -> &Receiver<Done> {
        &self.done
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread's state: the current segment.
struct Files {
    dir: PathBuf,
    seq: u64,
    file: File,
}

impl Files {
    fn run(&mut self, jobs: Receiver<Job>, done: Sender<Done>) {
        let mut buf = Vec::new();
        while let Ok(first) = jobs.recv() {
            let mut last = None;
            let mut sync = false;
            let mut job = Some(first);
            let mut result = Ok(());
            // Everything already queued goes out with one write and one sync.
            while let Some(j) = job.take().or_else(|| jobs.try_recv().ok()) {
                match j {
                    Job::Append {
                        tag,
                        seq,
                        bytes,
                        sync: s,
                    } => {
                        if buf.is_empty() {
                            buf = bytes;
                        } else {
                            buf.extend_from_slice(&bytes);
                        }
                        last = Some((tag, seq));
                        sync |= s;
                    }
                    Job::Roll { seq, header } => {
                        result = self
                            .flush(&mut buf, true)
                            .and_then(|()| self.roll(seq, &header));
                        sync = false;
                    }
                    Job::DeleteBelow(seq) => result = self.delete_below(seq),
                }
                if result.is_err() {
                    break;
                }
            }
            let result = result.and_then(|()| self.flush(&mut buf, sync));
            let report = match result {
                Ok(()) => match last {
                    Some((tag, seq)) => Done::Persisted { tag, seq },
                    None => continue,
                },
                Err(e) => Done::Failed(e.to_string()),
            };
            let failed = matches!(report, Done::Failed(_));
            if done.send(report).is_err() || failed {
                return;
            }
        }
    }

    fn flush(&mut self, buf: &mut Vec<u8>, sync: bool) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, self.seq);
        if !buf.is_empty() {
            self.file.write_all(buf).map_err(io_err("write", &path))?;
            buf.clear();
        }
        if sync {
            self.file.sync_data().map_err(io_err("fsync", &path))?;
        }
        Ok(())
    }

    fn roll(&mut self, seq: u64, header: &[u8]) -> Result<(), StoreError> {
        self.file = create_segment(&self.dir, seq, header)?;
        self.seq = seq;
        Ok(())
    }

    fn delete_below(&mut self, below: u64) -> Result<(), StoreError> {
        // Oldest first, so a crash leaves a contiguous suffix.
        for seq in list_segments(&self.dir)? {
            if seq >= below || seq >= self.seq {
                break;
            }
            let path = segment_path(&self.dir, seq);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("delete", &path)(e)),
            }
        }
        Ok(())
    }
}

/// Creates segment `seq` holding `header`, durably (file and directory), and
/// returns it open for appending. An existing file of that name (left by a
/// crash in the middle of a roll) is replaced.
pub fn create_segment(dir: &Path, seq: u64, header: &[u8]) -> Result<File, StoreError> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    file.write_all(header).map_err(io_err("write", &path))?;
    file.sync_all().map_err(io_err("fsync", &path))?;
    fsync_dir(dir)?;
    Ok(file)
}

//! Durable Raft storage: a segmented write-ahead log plus one snapshot file.
//!
//! Files in the member's directory:
//! - `snapshot`: the latest snapshot (metadata, conf state and the state
//!   machine image), replaced atomically (write `snapshot.tmp`, fsync,
//!   rename, fsync the directory). A snapshot taken locally is written by a
//!   thread of its own ([`DiskStorage::start_snapshot`]); the Raft loop only
//!   encodes the state machine and hands it over.
//! - `wal.<seq>`: the log's segments (see [`crate::wal`]): records of entry
//!   batches and hard states, each segment opening with the index and term of
//!   the last entry before it. Segments are only appended to, never
//!   rewritten; once a durable snapshot covers every entry of a segment (and
//!   the `keep` entries retained behind it), the whole file is deleted.
//!
//! Every `Ready` appends its records with one `write` and one `fdatasync`
//! ([`DiskStorage::sync`]), on the Raft loop. On open the segments are
//! replayed; a torn or corrupt tail (a crash in the middle of a write) is cut
//! off, which loses only records that were never acknowledged because their
//! fsync had not returned.
//!
//! The entries also stay in memory: placement metadata is small, and Raft
//! reads recent entries far more often than old ones.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam::channel::{self, Receiver};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::wal;

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
/// The log restarts after this index and term (written after installing a
/// received snapshot): what came before is dropped.
const KIND_LOG_START: u8 = 3;
/// A segment's first record: the index and term of the last entry before it.
const KIND_SEGMENT_START: u8 = 4;
const HEADER: usize = 8;
/// A record longer than this is taken as corruption.
const MAX_RECORD: usize = 256 << 20;

/// Storage that could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not what this code writes.
    #[error("corrupt {path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The snapshot writer thread is gone.
    #[error("the snapshot writer stopped")]
    Stopped,
}

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A live log segment: its number and the index of the last entry before it.
#[derive(Debug, Clone, Copy)]
struct Segment {
    seq: u64,
    prev_index: u64,
}

/// An empty segment file made (and made durable) ahead of time, so starting
/// a segment costs the Raft loop no fsync.
#[derive(Debug)]
struct Spare {
    seq: u64,
    file: File,
}

/// What the snapshot thread hands back: the snapshot, durable, and the next
/// spare segment.
#[derive(Debug)]
pub struct SnapshotWritten {
    snap: Snapshot,
    spare: Option<Spare>,
}

/// The snapshot thread's report.
pub type SnapshotReport = Result<SnapshotWritten, StoreError>;

/// A snapshot being written by its own thread.
struct SnapshotJob {
    index: u64,
    done: Receiver<SnapshotReport>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotJob {
    /// Waits for the thread; its result.
    fn wait(mut self) -> SnapshotReport {
        let result = self.done.recv().unwrap_or(Err(StoreError::Stopped));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        result
    }
}

/// The Raft log, hard state and latest snapshot of one member, on disk and
/// mirrored in memory.
pub struct DiskStorage {
    dir: PathBuf,
    /// The segment appended to (the last of `segments`).
    wal: File,
    /// Records appended since the last [`DiskStorage::sync`].
    pending: Vec<u8>,
    /// Bytes written to the current segment.
    segment_bytes: u64,
    /// Whether the pending records include entries.
    pending_entries: bool,
    /// Whether the current segment's first records are durable (a segment
    /// started in a spare file gets them with the next sync).
    current_durable: bool,
    /// The next segment number to hand out (segments and spares).
    next_seq: u64,
    spare: Option<Spare>,
    segments: Vec<Segment>,
    hard_state: HardState,
    snapshot: Snapshot,
    /// Index and term of the entry just before `entries[0]`.
    log_start: (u64, u64),
    entries: Vec<Entry>,
    /// Set when Raft needed a snapshot the stored one cannot serve (it
    /// predates the recipient joining): the driver then takes a fresh one.
    snapshot_wanted: std::cell::Cell<bool>,
    snapshotting: Option<SnapshotJob>,
}

impl std::fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStorage")
            .field("dir", &self.dir)
            .field("log_start", &self.log_start)
            .field("entries", &self.entries.len())
            .field("segments", &self.segments)
            .field("snapshot_index", &self.snapshot.get_metadata().index)
            .finish()
    }
}

impl Drop for DiskStorage {
    fn drop(&mut self) {
        if let Some(job) = self.snapshotting.take() {
            let _ = job.wait();
        }
    }
}

impl DiskStorage {
    /// Opens the storage in `dir`, creating it if needed. A brand new storage
    /// starts from `bootstrap` when given (the initial members' snapshot),
    /// otherwise empty (a member waiting to be added).
    pub fn open(dir: &Path, bootstrap: Option<Snapshot>) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let snap_path = dir.join("snapshot");
        // A snapshot whose write a crash interrupted.
        let tmp = dir.join("snapshot.tmp");
        if tmp.exists() {
            tracing::warn!(path = %tmp.display(), "removing an unfinished snapshot");
            fs::remove_file(&tmp).map_err(io_err("delete", &tmp))?;
        }
        let mut seqs = wal::list_segments(dir)?;
        let fresh = !snap_path.exists() && seqs.is_empty();
        if fresh {
            if let Some(snap) = &bootstrap {
                write_snapshot_file(dir, snap)?;
            }
        }
        let snapshot = read_snapshot_file(&snap_path)?.unwrap_or_default();
        let mut replay = Replay::new(&snapshot);
        let mut segments = Vec::new();
        let mut i = 0;
        while i < seqs.len() {
            let seq = seqs[i];
            let path = wal::segment_path(dir, seq);
            let (valid, len, prev) = replay.read_segment(&path)?;
            if valid < len {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(valid).and_then(|()| f.sync_all()))
                    .map_err(io_err("truncate", &path))?;
                // Only the last segment is ever appended to: anything after
                // a bad record in an earlier one cannot be trusted either.
                for later in seqs.drain(i + 1..) {
                    let p = wal::segment_path(dir, later);
                    tracing::warn!(path = %p.display(), "dropping a segment after a corrupt record");
                    fs::remove_file(&p).map_err(io_err("delete", &p))?;
                }
            }
            if valid == 0 {
                // Nothing in it (a roll a crash interrupted).
                fs::remove_file(&path).map_err(io_err("delete", &path))?;
            } else {
                segments.push(Segment {
                    seq,
                    prev_index: prev,
                });
            }
            i += 1;
        }
        let next_seq = seqs.last().map_or(1, |s| s + 1);
        let (mut hard_state, mut log_start, mut entries) =
            (replay.hard_state, replay.log_start, replay.entries);
        reconcile(&snapshot, &mut hard_state, &mut log_start, &mut entries);
        // Appends go to a new segment, opened with the state replayed so far.
        let last = entries.last().map_or(log_start, |e| (e.index, e.term));
        let header = header_records(KIND_SEGMENT_START, last, &hard_state);
        let file = wal::create_segment(dir, next_seq, &header)?;
        segments.push(Segment {
            seq: next_seq,
            prev_index: last.0,
        });
        let spare = Spare {
            seq: next_seq + 1,
            file: wal::create_segment(dir, next_seq + 1, &[])?,
        };
        Ok(DiskStorage {
            dir: dir.to_path_buf(),
            wal: file,
            pending: Vec::new(),
            segment_bytes: 0,
            pending_entries: false,
            current_durable: true,
            next_seq: next_seq + 2,
            spare: Some(spare),
            segments,
            hard_state,
            snapshot,
            log_start,
            entries,
            snapshot_wanted: std::cell::Cell::new(false),
            snapshotting: None,
        })
    }

    /// Drops log state the snapshot supersedes.
    fn reconcile_with_snapshot(&mut self) {
        reconcile(
            &self.snapshot,
            &mut self.hard_state,
            &mut self.log_start,
            &mut self.entries,
        );
    }

    /// A new segment's first records: where the log stands (`kind` says
    /// whether as a continuation or a restart) and the hard state.
    fn segment_header(&self, kind: u8) -> Vec<u8> {
        let at = if kind == KIND_LOG_START {
            self.log_start
        } else {
            let last = self.last_index();
            (last, self.term_of(last).unwrap_or(0))
        };
        header_records(kind, at, &self.hard_state)
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.log_start.0 {
            return Some(self.log_start.1);
        }
        let first = self.log_start.0 + 1;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize).map(|e| e.term)
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.log_start.0, |e| e.index)
    }

    /// The latest durable snapshot.
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The persisted hard state (including buffered changes).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The index of the first entry still in the log.
    pub fn first_log_index(&self) -> u64 {
        self.log_start.0 + 1
    }

    /// The log segments on disk (for tests and status).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends entries, replacing any at the same or later indexes. Visible
    /// to Raft at once; written with the next [`DiskStorage::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.log_start.0 || first.index > self.last_index() + 1 {
            return Err(StoreError::Corrupt {
                path: self.dir.clone(),
                problem: format!(
                    "append at {} outside the log ({}..={})",
                    first.index,
                    self.log_start.0 + 1,
                    self.last_index() + 1
                ),
            });
        }
        truncate_from(&mut self.entries, self.log_start.0, first.index);
        self.entries.extend_from_slice(entries);
        let mut body = Vec::new();
        for e in entries {
            put_message(&mut body, e);
        }
        push_record(&mut self.pending, KIND_ENTRIES, &body);
        self.pending_entries = true;
        Ok(())
    }

    /// Records a new hard state. Buffered until [`DiskStorage::sync`].
    pub fn set_hard_state(&mut self, hs: HardState) {
        let body = hs.write_to_bytes().unwrap_or_default();
        push_record(&mut self.pending, KIND_HARD_STATE, &body);
        self.hard_state = hs;
    }

    /// Records a new commit index.
    pub fn set_commit(&mut self, commit: u64) {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(hs);
    }

    /// Writes the buffered records with one write and one fdatasync, then
    /// starts a new segment if the current one is full.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self.current_path();
        self.wal
            .write_all(&self.pending)
            .map_err(io_err("write", &path))?;
        self.wal.sync_data().map_err(io_err("fsync", &path))?;
        self.segment_bytes += self.pending.len() as u64;
        self.pending.clear();
        self.pending_entries = false;
        self.current_durable = true;
        if self.segment_bytes >= wal::SEGMENT_BYTES {
            self.roll(KIND_SEGMENT_START)?;
        }
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        wal::segment_path(&self.dir, self.segments.last().map_or(0, |s| s.seq))
    }

    /// Starts a new segment. `KIND_LOG_START` makes it a restart of the log
    /// (after a received snapshot), so the older segments no longer count.
    fn roll(&mut self, kind: u8) -> Result<(), StoreError> {
        // Entries buffered belong to the segment before (the new one says
        // it starts after them).
        if self.pending_entries {
            self.sync()?;
        }
        let header = self.segment_header(kind);
        let current = self.segments.last().map_or(0, |s| s.seq);
        let seq = match self.spare.take() {
            Some(spare) if spare.seq > current => {
                // Already durable in the directory: its first records go
                // out with the next sync, ahead of what is buffered (hard
                // states only, the last of which the header repeats).
                let mut pending = header;
                pending.append(&mut self.pending);
                self.pending = pending;
                self.wal = spare.file;
                self.current_durable = false;
                spare.seq
            }
            stale => {
                if let Some(spare) = stale {
                    let path = wal::segment_path(&self.dir, spare.seq);
                    drop(spare);
                    fs::remove_file(&path).map_err(io_err("delete", &path))?;
                }
                if !self.pending.is_empty() {
                    self.sync()?;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.wal = wal::create_segment(&self.dir, seq, &header)?;
                self.current_durable = true;
                seq
            }
        };
        self.segments.push(Segment {
            seq,
            prev_index: self.last_index(),
        });
        self.segment_bytes = 0;
        Ok(())
    }

    /// Installs a snapshot received from the leader: it replaces the whole
    /// log. Waits for everything, the snapshot file included, to be durable.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), StoreError> {
        if let Some(job) = self.snapshotting.take() {
            // A local snapshot older than this one: let it finish, then
            // overwrite it.
            if let Err(e) = job.wait() {
                tracing::warn!("local snapshot failed: {e}");
            }
        }
        self.sync()?;
        write_snapshot_file(&self.dir, &snap)?;
        let meta = snap.get_metadata();
        self.log_start = (meta.index, meta.term);
        self.entries.clear();
        self.snapshot = snap;
        self.reconcile_with_snapshot();
        self.roll(KIND_LOG_START)?;
        // The restart and the hard state are durable before what they
        // replace goes.
        self.sync()?;
        let seq = self.segments.last().map_or(0, |s| s.seq);
        self.segments.retain(|s| s.seq >= seq);
        wal::delete_below(&self.dir, seq)
    }

    /// Whether a snapshot is being written.
    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshotting.is_some()
    }

    /// Starts writing a snapshot of the state machine at `index` (applied,
    /// so in the log) on a thread of its own, and starts a new log segment
    /// so the one before can be deleted once the snapshot is durable. Does
    /// nothing if a snapshot is already being written.
    pub fn start_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        image: Vec<u8>,
    ) -> Result<(), StoreError> {
        if self.snapshotting.is_some() {
            return Ok(());
        }
        let term = self.term_of(index).ok_or_else(|| StoreError::Corrupt {
            path: self.dir.clone(),
            problem: format!("snapshot at {index}, outside the log"),
        })?;
        let mut snap = Snapshot {
            data: image.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        self.roll(KIND_SEGMENT_START)?;
        // The thread also makes the next spare segment, if the roll used it.
        let spare_seq = self.spare.is_none().then(|| {
            self.next_seq += 1;
            self.next_seq - 1
        });
        let (tx, done) = channel::bounded(1);
        let dir = self.dir.clone();
        let thread = std::thread::Builder::new()
            .name("placement-snap".into())
            .spawn(move || {
                let result = write_snapshot_file(&dir, &snap).map(|()| {
                    let spare =
                        spare_seq.and_then(|seq| match wal::create_segment(&dir, seq, &[]) {
                            Ok(file) => Some(Spare { seq, file }),
                            Err(e) => {
                                tracing::warn!("cannot make a spare log segment: {e}");
                                None
                            }
                        });
                    SnapshotWritten { snap, spare }
                });
                let _ = tx.send(result);
            })
            .map_err(io_err("spawn the snapshot writer for", &self.dir))?;
        self.snapshotting = Some(SnapshotJob {
            index,
            done,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Where the snapshot thread reports (never, when none runs).
    pub fn snapshot_done(&self) -> Receiver<SnapshotReport> {
        match &self.snapshotting {
            Some(job) => job.done.clone(),
            None => channel::never(),
        }
    }

    /// Once the snapshot being written is durable: makes it the one served,
    /// drops the entries it covers from memory (keeping up to `keep` before
    /// it for slow followers) and deletes the segments holding
    /// only such entries. Returns its index; None while it is still being
    /// written (or when none is).
    pub fn finish_snapshot(&mut self, keep: u64) -> Result<Option<u64>, StoreError> {
        let ready = self
            .snapshotting
            .as_ref()
            .is_some_and(|job| !job.done.is_empty());
        if !ready {
            return Ok(None);
        }
        let Some(job) = self.snapshotting.take() else {
            return Ok(None);
        };
        let index = job.index;
        let written = job.wait()?;
        self.snapshot = written.snap;
        if let Some(spare) = written.spare {
            let current = self.segments.last().map_or(0, |s| s.seq);
            if self.spare.is_none() && spare.seq > current {
                self.spare = Some(spare);
            } else {
                // A segment was started without it meanwhile.
                let path = wal::segment_path(&self.dir, spare.seq);
                drop(spare);
                fs::remove_file(&path).map_err(io_err("delete", &path))?;
            }
        }
        let to = index.saturating_sub(keep).max(self.log_start.0);
        if let Some(term) = self.term_of(to) {
            let drop = (to - self.log_start.0) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
            self.log_start = (to, term);
        }
        // A segment can go when the next one starts at or before `to`; and
        // not the one before the current one while the current one's first
        // records (the hard state) are not yet durable.
        let mut keep_from = self
            .segments
            .iter()
            .rposition(|s| s.prev_index <= to)
            .unwrap_or(0);
        if !self.current_durable {
            keep_from = keep_from.min(self.segments.len().saturating_sub(2));
        }
        if keep_from > 0 {
            let seq = self.segments[keep_from].seq;
            self.segments.drain(..keep_from);
            wal::delete_below(&self.dir, seq)?;
        }
        Ok(Some(index))
    }

    /// Takes a snapshot and waits for it (tests and tools).
    pub fn snapshot_now(
        &mut self,
        index: u64,
        conf_state: ConfState,
        image: Vec<u8>,
        keep: u64,
    ) -> Result<(), StoreError> {
        self.start_snapshot(index, conf_state, image)?;
        if let Some(job) = &self.snapshotting {
            // Wait without consuming the result.
            while job.done.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        self.finish_snapshot(keep).map(|_| ())
    }

    /// Whether Raft asked for a fresher snapshot since the last call.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Log entries held in memory (for metrics and tests).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }
}

/// Drops log state the snapshot supersedes (a crash between writing a
/// received snapshot and restarting the log leaves an older log behind), and
/// makes the hard state at least as new as the snapshot.
fn reconcile(
    snapshot: &Snapshot,
    hard_state: &mut HardState,
    log_start: &mut (u64, u64),
    entries: &mut Vec<Entry>,
) {
    let meta = snapshot.get_metadata();
    let (s_index, s_term) = (meta.index, meta.term);
    let last = entries.last().map_or(log_start.0, |e| e.index);
    let term_at = if s_index == log_start.0 {
        Some(log_start.1)
    } else if s_index > log_start.0 {
        entries
            .get((s_index - log_start.0 - 1) as usize)
            .map(|e| e.term)
    } else {
        None
    };
    let covered = log_start.0 <= s_index && last >= s_index && term_at == Some(s_term);
    if !covered {
        entries.clear();
        *log_start = (s_index, s_term);
    }
    if hard_state.commit < s_index {
        hard_state.commit = s_index;
    }
    if hard_state.term < s_term {
        hard_state.term = s_term;
    }
}

/// A segment's first records: `kind` (continuation or restart) at `at`
/// (index, term), then the hard state.
fn header_records(kind: u8, at: (u64, u64), hs: &HardState) -> Vec<u8> {
    let mut start = Vec::with_capacity(16);
    start.extend_from_slice(&at.0.to_le_bytes());
    start.extend_from_slice(&at.1.to_le_bytes());
    let mut buf = Vec::new();
    push_record(&mut buf, kind, &start);
    push_record(
        &mut buf,
        KIND_HARD_STATE,
        &hs.write_to_bytes().unwrap_or_default(),
    );
    buf
}

/// Removes entries at `from` and later.
fn truncate_from(entries: &mut Vec<Entry>, log_start: u64, from: u64) {
    let keep = from.saturating_sub(log_start + 1) as usize;
    entries.truncate(keep);
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.snapshot.get_metadata().get_conf_state().clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.log_start.0 + 1;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut ents = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.log_start.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.log_start.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(DiskStorage::last_index(self))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let cs = self.snapshot.get_metadata().get_conf_state();
        let knows_to = cs.voters.contains(&to) || cs.learners.contains(&to);
        if !knows_to || self.snapshot.get_metadata().index < request_index {
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

/// The state rebuilt from the log's segments.
struct Replay {
    hard_state: HardState,
    log_start: (u64, u64),
    entries: Vec<Entry>,
}

impl Replay {
    fn new(snapshot: &Snapshot) -> Self {
        let meta = snapshot.get_metadata();
        Replay {
            hard_state: HardState::default(),
            log_start: (meta.index, meta.term),
            entries: Vec::new(),
        }
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.log_start.0, |e| e.index)
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.log_start.0 {
            return Some(self.log_start.1);
        }
        if index < self.log_start.0 {
            return None;
        }
        self.entries
            .get((index - self.log_start.0 - 1) as usize)
            .map(|e| e.term)
    }

    /// Replays one segment; returns the length of its valid prefix, the
    /// file's length, and the index its first record starts after (0 when
    /// it does not say).
    fn read_segment(&mut self, path: &Path) -> Result<(u64, u64, u64), StoreError> {
        let mut data = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io_err("read", path))?;
        let mut pos = 0;
        let mut prev = 0;
        while let Some((kind, body, next)) = next_record(&data, pos) {
            if pos == 0 && (kind == KIND_SEGMENT_START || kind == KIND_LOG_START) {
                prev = index_term(body).map_or(0, |(i, _)| i);
            }
            if !self.apply_record(kind, body) {
                tracing::warn!(path = %path.display(), pos, "undecodable log record; cutting the log here");
                break;
            }
            pos = next;
        }
        if pos < data.len() {
            tracing::warn!(path = %path.display(), valid = pos, len = data.len(), "torn log tail cut off");
        }
        Ok((pos as u64, data.len() as u64, prev))
    }

    fn apply_record(&mut self, kind: u8, body: &[u8]) -> bool {
        match kind {
            KIND_HARD_STATE => match HardState::parse_from_bytes(body) {
                Ok(hs) => self.hard_state = hs,
                Err(_) => return false,
            },
            KIND_LOG_START => {
                let Some(at) = index_term(body) else {
                    return false;
                };
                self.log_start = at;
                self.entries.clear();
            }
            KIND_SEGMENT_START => {
                let Some((index, term)) = index_term(body) else {
                    return false;
                };
                // The first segment left, or one that does not continue what
                // came before (older segments deleted out of order): the log
                // starts here.
                if self.entries.is_empty()
                    || index > self.last_index()
                    || self.term_of(index) != Some(term)
                {
                    self.log_start = (index, term);
                    self.entries.clear();
                }
            }
            KIND_ENTRIES => return self.apply_entries(body),
            _ => return false,
        }
        true
    }

    fn apply_entries(&mut self, mut body: &[u8]) -> bool {
        while !body.is_empty() {
            let Some((msg, rest)) = take_message(body) else {
                return false;
            };
            let Ok(e) = Entry::parse_from_bytes(msg) else {
                return false;
            };
            body = rest;
            if e.index <= self.log_start.0 {
                continue;
            }
            let last = self.last_index();
            if e.index > last + 1 {
                // A gap: cannot happen with this writer; keep the prefix.
                return false;
            }
            truncate_from(&mut self.entries, self.log_start.0, e.index);
            self.entries.push(e);
        }
        true
    }
}

fn index_term(body: &[u8]) -> Option<(u64, u64)> {
    if body.len() != 16 {
        return None;
    }
    let index = u64::from_le_bytes(body[..8].try_into().ok()?);
    let term = u64::from_le_bytes(body[8..].try_into().ok()?);
    Some((index, term))
}

/// The record at `pos`: its kind, body and the position after it.
fn next_record(data: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let header = data.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let payload = data.get(pos + HEADER..pos + HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((payload[0], &payload[1..], pos + HEADER + len))
}

fn push_record(buf: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(body);
    buf.extend_from_slice(&((body.len() + 1) as u32).to_le_bytes());
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(body);
}

fn put_message(buf: &mut Vec<u8>, m: &impl protobuf::Message) {
    let bytes = m.write_to_bytes().unwrap_or_default();
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(&bytes);
}

fn take_message(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let msg = buf.get(4..4 + len)?;
    Some((msg, &buf[4 + len..]))
}

fn write_snapshot_file(dir: &Path, snap: &Snapshot) -> Result<(), StoreError> {
    let bytes = snap.write_to_bytes().map_err(|e| StoreError::Corrupt {
        path: dir.join("snapshot"),
        problem: e.to_string(),
    })?;
    let tmp = dir.join("snapshot.tmp");
    let path = dir.join("snapshot");
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&crc32fast::hash(&bytes).to_le_bytes())
        .and_then(|()| f.write_all(&bytes))
        .map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    fsync_dir(dir)
}

fn read_snapshot_file(path: &Path) -> Result<Option<Snapshot>, StoreError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let corrupt = |problem: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        problem,
    };
    if data.len() < 4 {
        return Err(corrupt("too short".into()));
    }
    let crc = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    if crc32fast::hash(&data[4..]) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    Snapshot::parse_from_bytes(&data[4..])
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// The snapshot a brand new group starts from: index 1, term 1, the initial
/// voters, and the state machine image `data`.
pub fn bootstrap_snapshot(voters: Vec<u64>, data: Vec<u8>) -> Snapshot {
    let mut snap = Snapshot::default();
    let meta = snap.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.set_conf_state(ConfState::from((voters, vec![])));
    snap.data = data.into();
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "placement-storage-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn boot() -> Option<Snapshot> {
        Some(bootstrap_snapshot(vec![1, 2, 3], b"img".to_vec()))
    }

    fn cs() -> ConfState {
        ConfState::from((vec![1, 2, 3], vec![]))
    }

    /// The last segment holding anything (the spare after it is empty).
    fn last_segment(dir: &Path) -> PathBuf {
        let seqs = wal::list_segments(dir).unwrap();
        seqs.iter()
            .rev()
            .map(|s| wal::segment_path(dir, *s))
            .find(|p| fs::metadata(p).unwrap().len() > 0)
            .unwrap()
    }

    fn indexes(s: &DiskStorage, low: u64) -> Vec<(u64, u64)> {
        let high = Storage::last_index(s).unwrap() + 1;
        s.entries(low, high, None, GetEntriesContext::empty(false))
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    #[test]
    fn bootstrap_then_reopen() {
        let dir = tempdir("boot");
        let s = DiskStorage::open(&dir, boot()).unwrap();
        let st = s.initial_state().unwrap();
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(st.hard_state.commit, 1);
        assert_eq!(s.first_index().unwrap(), 2);
        assert_eq!(Storage::last_index(&s).unwrap(), 1);
        assert_eq!(s.term(1).unwrap(), 1);
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.snapshot_ref().get_data(), b"img");
        assert_eq!(s.initial_state().unwrap().hard_state.term, 1);
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 1);
    }

    #[test]
    fn entries_and_hard_state_survive_reopen() {
        let dir = tempdir("reopen");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        s.append(&[entry(2, 2, b"a"), entry(3, 2, b"b"), entry(4, 2, b"c")])
            .unwrap();
        s.sync().unwrap();
        // A conflicting suffix from a new leader replaces 4.
        s.append(&[entry(4, 3, b"d"), entry(5, 3, b"e")]).unwrap();
        let hs = HardState {
            term: 3,
            vote: 2,
            commit: 3,
            ..Default::default()
        };
        s.set_hard_state(hs.clone());
        s.sync().unwrap();
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.initial_state().unwrap().hard_state, hs);
        assert_eq!(indexes(&s, 2), vec![(2, 2), (3, 2), (4, 3), (5, 3)]);
        let ents = s
            .entries(4, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(ents[0].get_data(), b"d");
    }

    #[test]
    fn torn_tail_is_cut_and_log_stays_usable() {
        let dir = tempdir("torn");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        s.append(&[entry(2, 1, b"a")]).unwrap();
        s.sync().unwrap();
        s.append(&[entry(3, 1, b"b")]).unwrap();
        s.sync().unwrap();
        drop(s);
        let wal = last_segment(&dir);
        let len = fs::metadata(&wal).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&wal)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 2);
        s.append(&[entry(3, 1, b"c")]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        let e = s
            .entries(3, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(e[0].get_data(), b"c");
    }

    #[test]
    fn compaction_keeps_the_tail_and_survives_reopen() {
        let dir = tempdir("compact");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        let ents: Vec<_> = (2..=20).map(|i| entry(i, 2, b"x")).collect();
        s.append(&ents).unwrap();
        s.set_commit(20);
        s.sync().unwrap();
        s.snapshot_now(15, cs(), b"at15".to_vec(), 5).unwrap();
        assert_eq!(s.first_index().unwrap(), 11);
        assert!(matches!(
            s.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        // The segment holding 2..=20 is not covered up to its end, so it
        // stays, and the log on reopen starts where that segment does.
        assert!(s.first_index().unwrap() <= 11);
        assert_eq!(Storage::last_index(&s).unwrap(), 20);
        assert_eq!(s.snapshot(0, 1).unwrap().get_data(), b"at15");
        // A peer the snapshot does not know of asks for a fresh one.
        assert!(s.snapshot(0, 9).is_err());
        assert!(s.take_snapshot_wanted());
        assert_eq!(s.term(10).unwrap(), 2);
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 20);
    }

    #[test]
    fn whole_segments_are_deleted_once_a_snapshot_covers_them() {
        let dir = tempdir("segments");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        let mut index = 1;
        for _ in 0..5 {
            let ents: Vec<_> = (0..100)
                .map(|_| {
                    index += 1;
                    entry(index, 2, b"y")
                })
                .collect();
            s.append(&ents).unwrap();
            s.set_commit(index);
            s.sync().unwrap();
            s.snapshot_now(index, cs(), format!("at{index}").into_bytes(), 10)
                .unwrap();
            assert_eq!(s.first_index().unwrap(), index - 9);
        }
        // The segment being written and the one before it (whose entries
        // the last snapshot's retained tail may reach into) at most, plus
        // the one a snapshot just started.
        let files = wal::list_segments(&dir).unwrap();
        // Plus at most one empty spare made ahead of the next roll.
        assert!(files.len() <= 4, "segments left: {files:?}");
        assert!(files.len() <= s.segment_count() + 1, "{files:?}");
        s.append(&[entry(index + 1, 3, b"z")]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.snapshot_ref().get_data(), format!("at{index}").as_bytes());
        assert!(s.first_index().unwrap() <= index - 9);
        assert_eq!(Storage::last_index(&s).unwrap(), index + 1);
        assert_eq!(s.term(index + 1).unwrap(), 3);
        let got = indexes(&s, index - 9);
        assert_eq!(got.len(), 11);
    }

    #[test]
    fn crash_in_the_middle_of_a_snapshot_write() {
        let dir = tempdir("crash-snap");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        let ents: Vec<_> = (2..=30).map(|i| entry(i, 2, b"x")).collect();
        s.append(&ents).unwrap();
        s.set_commit(30);
        s.sync().unwrap();
        s.snapshot_now(10, cs(), b"at10".to_vec(), 0).unwrap();
        // The next snapshot started a segment, and its writer got as far as
        // a partial temporary file when the process died.
        s.roll(KIND_SEGMENT_START).unwrap();
        s.sync().unwrap();
        drop(s);
        fs::write(dir.join("snapshot.tmp"), b"\x01\x02partial").unwrap();
        let s = DiskStorage::open(&dir, None).unwrap();
        assert!(!dir.join("snapshot.tmp").exists());
        assert_eq!(s.snapshot_ref().get_data(), b"at10");
        assert_eq!(s.snapshot_ref().get_metadata().index, 10);
        assert!(s.first_index().unwrap() <= 11);
        assert_eq!(Storage::last_index(&s).unwrap(), 30);
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 30);
    }

    #[test]
    fn crash_before_a_segment_started_in_a_spare_is_synced() {
        let dir = tempdir("crash-spare");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        for round in 0..3u64 {
            let base = 2 + round * 10;
            let ents: Vec<_> = (base..base + 10).map(|i| entry(i, 2, b"x")).collect();
            s.append(&ents).unwrap();
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: base + 9,
                ..Default::default()
            };
            s.set_hard_state(hs);
            s.sync().unwrap();
            // Starts a segment in the spare: its header is only buffered.
            s.snapshot_now(base + 9, cs(), b"img".to_vec(), 0).unwrap();
        }
        // The process dies before anything else is synced.
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 31);
        assert_eq!(s.term(31).unwrap(), 2);
        let hs = s.initial_state().unwrap().hard_state;
        assert_eq!((hs.term, hs.vote, hs.commit), (2, 1, 31));
        assert_eq!(s.snapshot_ref().get_metadata().index, 31);
    }

    #[test]
    fn crash_between_a_snapshot_and_deleting_segments() {
        let dir = tempdir("crash-delete");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        let ents: Vec<_> = (2..=30).map(|i| entry(i, 2, b"x")).collect();
        s.append(&ents).unwrap();
        s.set_commit(30);
        s.sync().unwrap();
        drop(s);
        // The snapshot is durable; the segments it covers are still there.
        let mut snap = bootstrap_snapshot(vec![1, 2, 3], b"at25".to_vec());
        snap.mut_metadata().index = 25;
        snap.mut_metadata().term = 2;
        write_snapshot_file(&dir, &snap).unwrap();
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.snapshot_ref().get_data(), b"at25");
        assert_eq!(Storage::last_index(&s).unwrap(), 30);
        assert_eq!(s.term(26).unwrap(), 2);
    }

    #[test]
    fn crash_in_the_middle_of_a_roll() {
        let dir = tempdir("crash-roll");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        s.append(&[entry(2, 1, b"a"), entry(3, 1, b"b")]).unwrap();
        s.sync().unwrap();
        drop(s);
        let seqs = wal::list_segments(&dir).unwrap();
        let next = seqs.last().unwrap() + 1;
        // An empty new segment, and one with half a header.
        fs::write(wal::segment_path(&dir, next), b"").unwrap();
        fs::write(wal::segment_path(&dir, next + 1), b"\x11\x00\x00\x00\xaa").unwrap();
        let mut s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 3);
        assert!(!wal::segment_path(&dir, next).exists());
        s.append(&[entry(4, 1, b"c")]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(indexes(&s, 2), vec![(2, 1), (3, 1), (4, 1)]);
    }

    #[test]
    fn received_snapshot_replaces_the_log() {
        let dir = tempdir("recv");
        let mut s = DiskStorage::open(&dir, None).unwrap();
        assert!(!s.initial_state().unwrap().initialized());
        s.append(&[entry(1, 1, b"old")]).unwrap();
        s.sync().unwrap();
        let mut snap = bootstrap_snapshot(vec![1, 2], b"img".to_vec());
        snap.mut_metadata().index = 100;
        snap.mut_metadata().term = 4;
        s.apply_snapshot(snap).unwrap();
        s.append(&[entry(101, 4, b"n")]).unwrap();
        s.sync().unwrap();
        assert_eq!(wal::list_segments(&dir).unwrap().len(), 1);
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        let st = s.initial_state().unwrap();
        assert_eq!(st.conf_state.voters, vec![1, 2]);
        assert_eq!(st.hard_state.commit, 100);
        assert_eq!(s.first_index().unwrap(), 101);
        assert_eq!(Storage::last_index(&s).unwrap(), 101);
    }

    #[test]
    fn stale_log_behind_a_newer_snapshot_is_dropped() {
        let dir = tempdir("stale");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        s.append(&[entry(2, 1, b"a"), entry(3, 1, b"b")]).unwrap();
        s.sync().unwrap();
        drop(s);
        // As if a received snapshot was written but the log not yet restarted.
        let mut snap = bootstrap_snapshot(vec![1, 2, 3], b"new".to_vec());
        snap.mut_metadata().index = 50;
        snap.mut_metadata().term = 3;
        write_snapshot_file(&dir, &snap).unwrap();
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.first_index().unwrap(), 51);
        assert_eq!(Storage::last_index(&s).unwrap(), 50);
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 50);
    }

    #[test]
    fn a_log_from_before_segments_is_read() {
        let dir = tempdir("legacy");
        fs::create_dir_all(&dir).unwrap();
        write_snapshot_file(&dir, &boot().unwrap()).unwrap();
        let mut buf = Vec::new();
        let mut body = Vec::new();
        put_message(&mut body, &entry(2, 1, b"a"));
        put_message(&mut body, &entry(3, 1, b"b"));
        push_record(&mut buf, KIND_ENTRIES, &body);
        fs::write(dir.join("wal"), &buf).unwrap();
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(indexes(&s, 2), vec![(2, 1), (3, 1)]);
    }
}

//! Durable Raft storage: a write-ahead log plus one snapshot file.
//!
//! Files in the member's directory:
//! - `snapshot`: the latest snapshot (metadata, conf state and the state
//!   machine image), replaced atomically (write `snapshot.tmp`, fsync,
//!   rename, fsync the directory).
//! - `wal`: an append-only sequence of records `[u32 len][u32 crc32][kind][body]`
//!   (little endian): a batch of entries, a hard state, or the log start.
//!   After a snapshot the log is rewritten (`wal.tmp` then rename) holding only
//!   what the snapshot does not cover.
//!
//! Every `Ready` appends its records with one `write` and one `fdatasync`
//! ([`DiskStorage::sync`]). On open the log is replayed; a torn or corrupt
//! tail (a crash in the middle of a write) is cut off, which loses only
//! records that were never acknowledged because their fsync had not returned.
//!
//! The entries also stay in memory: placement metadata is small, and Raft
//! reads recent entries far more often than old ones.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_LOG_START: u8 = 3;
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
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The Raft log, hard state and latest snapshot of one member, on disk and
/// mirrored in memory.
pub struct DiskStorage {
    dir: PathBuf,
    wal: File,
    /// Records appended since the last [`DiskStorage::sync`].
    pending: Vec<u8>,
    hard_state: HardState,
    snapshot: Snapshot,
    /// Index and term of the entry just before `entries[0]`.
    log_start: (u64, u64),
    entries: Vec<Entry>,
    /// Set when Raft needed a snapshot the stored one cannot serve (it
    /// predates the recipient joining): the driver then takes a fresh one.
    snapshot_wanted: std::cell::Cell<bool>,
}

impl std::fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStorage")
            .field("dir", &self.dir)
            .field("log_start", &self.log_start)
            .field("entries", &self.entries.len())
            .field("snapshot_index", &self.snapshot.get_metadata().index)
            .finish()
    }
}

impl DiskStorage {
    /// Opens the storage in `dir`, creating it if needed. A brand new storage
    /// starts from `bootstrap` when given (the initial members' snapshot),
    /// otherwise empty (a member waiting to be added).
    pub fn open(dir: &Path, bootstrap: Option<Snapshot>) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let snap_path = dir.join("snapshot");
        let wal_path = dir.join("wal");
        let fresh = !snap_path.exists() && !wal_path.exists();
        if fresh {
            if let Some(snap) = &bootstrap {
                write_snapshot_file(dir, snap)?;
            }
        }
        let snapshot = read_snapshot_file(&snap_path)?.unwrap_or_default();
        let mut replay = Replay::new(&snapshot);
        let valid_len = replay.read_wal(&wal_path)?;
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal_path)
            .map_err(io_err("open", &wal_path))?;
        wal.set_len(valid_len)
            .map_err(io_err("truncate", &wal_path))?;
        let mut store = DiskStorage {
            dir: dir.to_path_buf(),
            wal,
            pending: Vec::new(),
            hard_state: replay.hard_state,
            snapshot,
            log_start: replay.log_start,
            entries: replay.entries,
            snapshot_wanted: std::cell::Cell::new(false),
        };
        store.reconcile_with_snapshot();
        if fresh && bootstrap.is_some() {
            store.set_hard_state(store.hard_state.clone());
            store.sync()?;
        }
        fsync_dir(dir)?;
        Ok(store)
    }

    /// Drops log state the snapshot supersedes (a crash between writing a
    /// received snapshot and rewriting the log leaves an older log behind).
    fn reconcile_with_snapshot(&mut self) {
        let meta = self.snapshot.get_metadata();
        let (s_index, s_term) = (meta.index, meta.term);
        let covered = self.log_start.0 <= s_index
            && self.last_index() >= s_index
            && self.term_of(s_index) == Some(s_term);
        if !covered {
            self.entries.clear();
            self.log_start = (s_index, s_term);
        }
        if self.hard_state.commit < s_index {
            self.hard_state.commit = s_index;
        }
        if self.hard_state.term < s_term {
            self.hard_state.term = s_term;
        }
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

    /// The latest snapshot.
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

    /// Appends entries, replacing any at the same or later indexes. Buffered
    /// until [`DiskStorage::sync`].
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

    /// Writes the buffered records with one write and one fdatasync.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self.dir.join("wal");
        self.wal
            .write_all(&self.pending)
            .map_err(io_err("write", &path))?;
        self.wal.sync_data().map_err(io_err("fsync", &path))?;
        self.pending.clear();
        Ok(())
    }

    /// Installs a snapshot received from the leader: it replaces the whole log.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<(), StoreError> {
        self.sync()?;
        write_snapshot_file(&self.dir, &snap)?;
        let meta = snap.get_metadata();
        self.log_start = (meta.index, meta.term);
        self.entries.clear();
        self.snapshot = snap;
        self.reconcile_with_snapshot();
        self.rewrite_wal()
    }

    /// Keeps a snapshot taken locally and compacts the log behind it,
    /// keeping up to `keep` entries before the snapshot for slow followers.
    pub fn compact(&mut self, snap: Snapshot, keep: u64) -> Result<(), StoreError> {
        self.sync()?;
        write_snapshot_file(&self.dir, &snap)?;
        let index = snap.get_metadata().index;
        self.snapshot = snap;
        let to = index.saturating_sub(keep).max(self.log_start.0);
        if let Some(term) = self.term_of(to) {
            let drop = (to - self.log_start.0) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
            self.log_start = (to, term);
        }
        self.rewrite_wal()
    }

    /// Replaces the log file with one holding the current state only.
    fn rewrite_wal(&mut self) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let mut start = Vec::with_capacity(16);
        start.extend_from_slice(&self.log_start.0.to_le_bytes());
        start.extend_from_slice(&self.log_start.1.to_le_bytes());
        push_record(&mut buf, KIND_LOG_START, &start);
        push_record(
            &mut buf,
            KIND_HARD_STATE,
            &self.hard_state.write_to_bytes().unwrap_or_default(),
        );
        if !self.entries.is_empty() {
            let mut body = Vec::new();
            for e in &self.entries {
                put_message(&mut body, e);
            }
            push_record(&mut buf, KIND_ENTRIES, &body);
        }
        let tmp = self.dir.join("wal.tmp");
        let path = self.dir.join("wal");
        write_durably(&tmp, &buf)?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        fsync_dir(&self.dir)?;
        self.wal = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        self.pending.clear();
        Ok(())
    }

    /// Whether Raft asked for a fresher snapshot since the last call.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Bytes of log entries held (for metrics and tests).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }
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

/// The state rebuilt from the log file.
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

    /// Replays the log; returns the length of its valid prefix.
    fn read_wal(&mut self, path: &Path) -> Result<u64, StoreError> {
        let mut data = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut data).map_err(io_err("read", path))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("open", path)(e)),
        }
        let mut pos = 0;
        while let Some((kind, body, next)) = next_record(&data, pos) {
            if !self.apply_record(kind, body) {
                tracing::warn!(path = %path.display(), pos, "undecodable log record; cutting the log here");
                break;
            }
            pos = next;
        }
        if pos < data.len() {
            tracing::warn!(path = %path.display(), valid = pos, len = data.len(), "torn log tail cut off");
        }
        Ok(pos as u64)
    }

    fn apply_record(&mut self, kind: u8, body: &[u8]) -> bool {
        match kind {
            KIND_HARD_STATE => match HardState::parse_from_bytes(body) {
                Ok(hs) => self.hard_state = hs,
                Err(_) => return false,
            },
            KIND_LOG_START if body.len() == 16 => {
                let index = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
                let term = u64::from_le_bytes(body[8..].try_into().unwrap_or_default());
                self.log_start = (index, term);
                self.entries.clear();
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
            let last = self.entries.last().map_or(self.log_start.0, |x| x.index);
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
    let mut buf = Vec::with_capacity(bytes.len() + 4);
    buf.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    buf.extend_from_slice(&bytes);
    let tmp = dir.join("snapshot.tmp");
    let path = dir.join("snapshot");
    write_durably(&tmp, &buf)?;
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

fn write_durably(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let mut f = File::create(path).map_err(io_err("create", path))?;
    f.write_all(data).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
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
    }

    #[test]
    fn entries_and_hard_state_survive_reopen() {
        let dir = tempdir("reopen");
        let mut s = DiskStorage::open(&dir, boot()).unwrap();
        s.append(&[entry(2, 2, b"a"), entry(3, 2, b"b"), entry(4, 2, b"c")])
            .unwrap();
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
        let ents = s
            .entries(2, 6, None, GetEntriesContext::empty(false))
            .unwrap();
        let got: Vec<_> = ents.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(2, 2), (3, 2), (4, 3), (5, 3)]);
        assert_eq!(ents[2].get_data(), b"d");
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
        let wal = dir.join("wal");
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
        let mut snap = bootstrap_snapshot(vec![1, 2, 3], b"at15".to_vec());
        snap.mut_metadata().index = 15;
        snap.mut_metadata().term = 2;
        s.compact(snap, 5).unwrap();
        assert_eq!(s.first_index().unwrap(), 11);
        assert!(matches!(
            s.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.first_index().unwrap(), 11);
        assert_eq!(Storage::last_index(&s).unwrap(), 20);
        assert_eq!(s.snapshot(0, 1).unwrap().get_data(), b"at15");
        // A peer the snapshot does not know of asks for a fresh one.
        assert!(s.snapshot(0, 9).is_err());
        assert!(s.take_snapshot_wanted());
        assert_eq!(s.term(10).unwrap(), 2);
    }

    #[test]
    fn received_snapshot_replaces_the_log() {
        let dir = tempdir("recv");
        let mut s = DiskStorage::open(&dir, None).unwrap();
        assert!(!s.initial_state().unwrap().initialized());
        let mut snap = bootstrap_snapshot(vec![1, 2], b"img".to_vec());
        snap.mut_metadata().index = 100;
        snap.mut_metadata().term = 4;
        s.apply_snapshot(snap).unwrap();
        s.append(&[entry(101, 4, b"n")]).unwrap();
        s.sync().unwrap();
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
        // As if a received snapshot was written but the log not yet rewritten.
        let mut snap = bootstrap_snapshot(vec![1, 2, 3], b"new".to_vec());
        snap.mut_metadata().index = 50;
        snap.mut_metadata().term = 3;
        write_snapshot_file(&dir, &snap).unwrap();
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.first_index().unwrap(), 51);
        assert_eq!(Storage::last_index(&s).unwrap(), 50);
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 50);
    }
}

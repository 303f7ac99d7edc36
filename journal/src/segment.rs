//! Segment files on glommio DMA files: creating them preallocated, reading
//! byte ranges, walking their batches, and the aligned tail writer.
//!
//! Direct I/O needs aligned positions and lengths, while batches are packed
//! byte-tight. The writer keeps the bytes of the last, partial 4 KiB page in
//! memory and rewrites that page with each write, padded with zeros; the
//! padding is overwritten by the next write and reads as the end of the log
//! until then. Rewriting the already-acknowledged prefix of a page writes
//! the same bytes again, so a torn write of that page cannot change them.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};

use crate::error::{IoContext, JournalError, Result};
use crate::format::{encode_pad, pad_len, parse_header, parse_pad, BatchHeader, FrameError};
use crate::recycle::{Recycled, Recycler};

/// Alignment of every direct write.
pub const ALIGN: u64 = 4096;

/// Rounds down to the alignment.
pub fn align_down(v: u64) -> u64 {
    v & !(ALIGN - 1)
}

/// Rounds up to the alignment.
pub fn align_up(v: u64) -> u64 {
    align_down(v + ALIGN - 1)
}

/// The log file of the segment starting at `base_offset`.
pub fn log_path(shard_dir: &Path, base_offset: u64) -> PathBuf {
    shard_dir.join(format!("{base_offset:020}.log"))
}

thread_local! {
    static PROBED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// glommio decides once per thread and device whether direct reads go to
/// the io_uring poll ring, by reading from the first DMA file opened. On a
/// new, empty file that read succeeds without reaching the device, and
/// every later read then fails with EOPNOTSUPP on devices without iopoll
/// (virtio disks). Opening a write-only file first makes the probe fail
/// cleanly, which keeps this thread on the main ring: always correct.
async fn settle_iopoll_probe(dir: &Path) {
    if PROBED.with(|p| p.replace(true)) {
        return;
    }
    let probe = dir.join(".iopoll-probe");
    match DmaFile::create(&probe).await {
        Ok(f) => {
            let _ = f.close().await;
        }
        Err(e) => tracing::warn!(error = %e, "iopoll probe file not created"),
    }
    let _ = std::fs::remove_file(&probe);
}

/// Creates a segment file of `capacity` bytes, preallocated.
pub async fn create(path: &Path, capacity: u64) -> Result<DmaFile> {
    settle_iopoll_probe(path.parent().unwrap_or(Path::new("."))).await;
    let ctx = || format!("creating segment {}", path.display());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await
        .ctx(ctx)?;
    file.pre_allocate(capacity, false).await.ctx(ctx)?;
    Ok(file)
}

/// Creates the file of a new segment: a recycled one from `pool` when it
/// has one of `capacity` bytes (see [`crate::recycle`]), else a new one,
/// preallocated. Returns what the recycled file may still hold.
pub async fn create_or_recycle(
    pool: &Recycler,
    path: &Path,
    capacity: u64,
) -> Result<(DmaFile, Option<Recycled>)> {
    if let Some(recycled) = pool.take(capacity, path) {
        return Ok((open(path).await?, Some(recycled)));
    }
    Ok((create(path, capacity).await?, None))
}

/// Opens an existing segment file for reading and writing.
pub async fn open(path: &Path) -> Result<DmaFile> {
    settle_iopoll_probe(path.parent().unwrap_or(Path::new("."))).await;
    OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .ctx(|| format!("opening segment {}", path.display()))
}

/// Reads up to `len` bytes at `pos` (fewer at the end of the file).
pub async fn read_bytes(file: &DmaFile, path: &Path, pos: u64, len: usize) -> Result<Bytes> {
    let rr = file
        .read_at(pos, len)
        .await
        .ctx(|| format!("reading {} at {pos}", path.display()))?;
    Ok(Bytes::copy_from_slice(&rr))
}

/// Why a walk over batches stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEnd {
    /// It reached the byte limit.
    Limit,
    /// It found zeros where a batch would start.
    Zero,
    /// The visitor asked to stop.
    Stopped,
    /// Bytes that are not a valid batch (or that the visitor refused).
    Damage(String),
}

/// Where a walk stopped and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Byte position of the first batch not visited.
    pub position: u64,
    /// Why it stopped.
    pub end: WalkEnd,
}

/// What a visitor tells the walk.
pub enum Step {
    /// Go on to the next batch.
    Next,
    /// Stop after this batch.
    Stop,
}

/// Walks the batches of a segment from byte `pos` up to byte `limit`,
/// reading `chunk` bytes at a time, and calls `visit(position, header,
/// batch bytes)` for each complete batch whose header checks. The visitor
/// checks the records it needs and may refuse a batch with a reason.
pub async fn walk<F>(
    file: &DmaFile,
    path: &Path,
    mut pos: u64,
    mut limit: u64,
    chunk: usize,
    mut visit: F,
) -> Result<Walk>
where
    F: FnMut(u64, &BatchHeader, &Bytes) -> Result<Step, String>,
{
    let mut buf = Bytes::new();
    let mut buf_pos = pos;
    let stop = |position, end| Ok(Walk { position, end });
    loop {
        if pos >= limit {
            return stop(pos, WalkEnd::Limit);
        }
        let rel = (pos - buf_pos) as usize;
        let window = buf.get(rel..).unwrap_or_default();
        let needed = match parse_pad(window) {
            Some(Ok(len)) if (pos + len as u64).is_multiple_of(ALIGN) => {
                pos += len as u64;
                continue;
            }
            Some(Ok(_)) => return stop(pos, WalkEnd::Damage("pad frame off the page grid".into())),
            Some(Err(FrameError::Incomplete { needed })) => Err(FrameError::Incomplete { needed }),
            Some(Err(e)) => return stop(pos, WalkEnd::Damage(e.to_string())),
            None => parse_header(window),
        };
        let needed = match needed {
            Ok(h) if window.len() >= h.batch_len as usize => {
                let len = h.batch_len as usize;
                if pos + len as u64 > limit {
                    return stop(pos, WalkEnd::Damage("batch runs past the end".into()));
                }
                match visit(pos, &h, &buf.slice(rel..rel + len)) {
                    Err(reason) => return stop(pos, WalkEnd::Damage(reason)),
                    Ok(Step::Stop) => return stop(pos + len as u64, WalkEnd::Stopped),
                    Ok(Step::Next) => pos += len as u64,
                }
                continue;
            }
            Ok(h) => h.batch_len as usize,
            Err(FrameError::Incomplete { needed }) => needed,
            Err(FrameError::End) => return stop(pos, WalkEnd::Zero),
            Err(e) => return stop(pos, WalkEnd::Damage(e.to_string())),
        };
        if buf_pos + buf.len() as u64 >= limit && buf_pos == pos {
            return stop(
                pos,
                WalkEnd::Damage(format!("truncated batch: {needed} bytes needed")),
            );
        }
        let want = needed.max(chunk).min((limit - pos) as usize);
        buf = read_bytes(file, path, pos, want).await?;
        buf_pos = pos;
        if (buf.len() as u64) < (limit - pos).min(want as u64) {
            limit = pos + buf.len() as u64;
        }
    }
}

/// A direct write ready to go out.
pub struct PreparedWrite {
    file: Rc<DmaFile>,
    path: PathBuf,
    buf: glommio::io::DmaBuffer,
    start: u64,
}

impl PreparedWrite {
    /// Bytes to write.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == 0
    }

    /// Issues the write and waits for it.
    pub async fn submit(self) -> Result<()> {
        let expected = self.buf.len();
        let (path, start) = (self.path, self.start);
        let written = self
            .file
            .write_at(self.buf, start)
            .await
            .ctx(|| format!("writing {} at {start}", path.display()))?;
        if written != expected {
            return Err(JournalError::io(
                format!("writing {} at {start}", path.display()),
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short direct write"),
            ));
        }
        Ok(())
    }
}

/// The append side of the segment being written.
pub struct TailWriter {
    file: Rc<DmaFile>,
    path: PathBuf,
    end: u64,
    tail: Vec<u8>,
    capacity: u64,
}

impl TailWriter {
    /// A writer appending at byte `end` of `file`, reading back the partial
    /// page before it.
    pub async fn open(file: Rc<DmaFile>, path: PathBuf, end: u64, capacity: u64) -> Result<Self> {
        let start = align_down(end);
        let tail = if end > start {
            let b = read_bytes(&file, &path, start, (end - start) as usize).await?;
            if b.len() as u64 != end - start {
                return Err(JournalError::Corrupt {
                    path,
                    position: start,
                    reason: "segment shorter than its data".into(),
                });
            }
            b.to_vec()
        } else {
            Vec::new()
        };
        Ok(TailWriter {
            file,
            path,
            end,
            tail,
            capacity,
        })
    }

    /// Bytes written so far.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes still free before the segment is full.
    pub fn remaining(&self) -> u64 {
        self.capacity.saturating_sub(self.end)
    }

    /// Whether the written bytes end on a page boundary (no page is shared
    /// with the next write).
    pub fn is_aligned(&self) -> bool {
        self.tail.is_empty()
    }

    /// Prepares a direct write of `len` more bytes that `fill` encodes,
    /// ending with a pad frame to the next page boundary when `pad` is set
    /// (so the next write can go out before this one completes). The
    /// writer's end moves at once; the returned write must be submitted.
    pub fn prepare(
        &mut self,
        len: usize,
        pad: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> PreparedWrite {
        let head = self.tail.len();
        let pad = if pad {
            pad_len(self.end + len as u64)
        } else {
            0
        };
        let total = head + len + pad;
        let padded = align_up(total as u64) as usize;
        let mut buf = self.file.alloc_dma_buffer(padded);
        let bytes = buf.as_bytes_mut();
        bytes[..head].copy_from_slice(&self.tail);
        fill(&mut bytes[head..head + len]);
        if pad > 0 {
            encode_pad(&mut bytes[head + len..total]);
        }
        bytes[total..].fill(0);
        let new_tail = bytes[align_down(total as u64) as usize..total].to_vec();
        let start = align_down(self.end);
        self.end += (len + pad) as u64;
        self.tail = new_tail;
        PreparedWrite {
            file: self.file.clone(),
            path: self.path.clone(),
            buf,
            start,
        }
    }

    /// An fdatasync of the file that owns what it needs, to run as a task
    /// of its own while writes go on.
    pub fn detached_sync(&self) -> impl std::future::Future<Output = Result<()>> + 'static {
        let (file, path) = (self.file.clone(), self.path.clone());
        async move {
            file.fdatasync()
                .await
                .ctx(|| format!("fdatasync {}", path.display()))
        }
    }

    /// fdatasync of the file.
    pub async fn sync(&self) -> Result<()> {
        self.file
            .fdatasync()
            .await
            .ctx(|| format!("fdatasync {}", self.path.display()))
    }
}

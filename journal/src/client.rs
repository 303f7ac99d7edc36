//! A blocking client of the journal RPC, for tools, tests and any thread.
//! One connection; calls are answered in order.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::engine::{Request, Response};
use crate::meta::ShardConfig;
use crate::record::{Record, RecordIn};
use crate::shard::{AppendAck, ReadLimits, SegmentInfo, ShardInfo};
use crate::wire::{self, RemoteError, MAX_FRAME};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("journal connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something that is not a valid answer.
    #[error("journal protocol: {0}")]
    Protocol(String),
    /// The server answered with an error.
    #[error("journal server: {0}")]
    Server(#[from] RemoteError),
}

/// A connection to a journal node.
pub struct JournalClient {
    stream: TcpStream,
    next_id: u64,
}

impl std::fmt::Debug for JournalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalClient")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

fn unexpected(r: Response) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {r:?}"))
}

impl JournalClient {
    /// Connects, with a 30 s limit on each answer.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(JournalClient { stream, next_id: 1 })
    }

    /// Sends one frame of raw bytes and returns the raw answer frame (for
    /// tests of the server's handling of bad input).
    pub fn call_raw(&mut self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.stream.write_all(&wire::frame(payload))?;
        self.read_frame()
    }

    fn read_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(ClientError::Protocol(format!("answer of {len} bytes")));
        }
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Sends any request and waits for its answer.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let answer = self.call_raw(&wire::encode_request(id, req))?;
        let (got, result) = wire::decode_response(&answer).map_err(ClientError::Protocol)?;
        if got != id {
            return Err(ClientError::Protocol(format!(
                "answer to {got}, expected {id}"
            )));
        }
        Ok(result?)
    }

    /// Sends many requests without waiting for each answer, and returns
    /// their outcomes in order: the server serves up to
    /// [`PIPELINE`](crate::server::PIPELINE) requests of a connection at
    /// once, so this takes about one round trip per that many requests.
    /// Requests go out in windows of that size, each window's answers read
    /// before the next is sent (so neither side can block the other).
    pub fn pipeline(
        &mut self,
        reqs: &[Request],
    ) -> Result<Vec<Result<Response, RemoteError>>, ClientError> {
        let mut results = Vec::with_capacity(reqs.len());
        for window in reqs.chunks(crate::server::PIPELINE) {
            let first = self.next_id;
            let mut out = Vec::new();
            for req in window {
                out.extend_from_slice(&wire::frame(&wire::encode_request(self.next_id, req)));
                self.next_id += 1;
            }
            self.stream.write_all(&out)?;
            for id in first..self.next_id {
                let answer = self.read_frame()?;
                let (got, result) =
                    wire::decode_response(&answer).map_err(ClientError::Protocol)?;
                if got != id {
                    return Err(ClientError::Protocol(format!(
                        "answer to {got}, expected {id}"
                    )));
                }
                results.push(result);
            }
        }
        Ok(results)
    }

    /// Creates a shard.
    pub fn create_shard(&mut self, name: &str, config: ShardConfig) -> Result<(), ClientError> {
        let name = name.to_string();
        self.call(&Request::CreateShard { name, config })
            .map(|_| ())
    }

    /// Deletes a shard and its data.
    pub fn delete_shard(&mut self, name: &str) -> Result<(), ClientError> {
        let name = name.to_string();
        self.call(&Request::DeleteShard { name }).map(|_| ())
    }

    /// Every shard.
    pub fn list_shards(&mut self) -> Result<Vec<ShardInfo>, ClientError> {
        match self.call(&Request::ListShards)? {
            Response::Shards(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// One shard's summary.
    pub fn describe_shard(&mut self, name: &str) -> Result<ShardInfo, ClientError> {
        let name = name.to_string();
        match self.call(&Request::DescribeShard { name })? {
            Response::Shard(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Appends a batch.
    pub fn append(
        &mut self,
        shard: &str,
        records: Vec<RecordIn>,
    ) -> Result<AppendAck, ClientError> {
        let shard = shard.to_string();
        match self.call(&Request::Append { shard, records })? {
            Response::Appended(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// Reads from `offset`.
    pub fn read(
        &mut self,
        shard: &str,
        offset: u64,
        limits: ReadLimits,
    ) -> Result<Vec<Record>, ClientError> {
        let shard = shard.to_string();
        match self.call(&Request::Read {
            shard,
            offset,
            limits,
        })? {
            Response::Records(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// The first offset at or after `timestamp` (ms).
    pub fn offset_for_time(
        &mut self,
        shard: &str,
        timestamp: u64,
    ) -> Result<Option<u64>, ClientError> {
        let shard = shard.to_string();
        self.offset_answer(&Request::OffsetForTime { shard, timestamp })
    }

    /// The shard's segments.
    pub fn list_segments(&mut self, shard: &str) -> Result<Vec<SegmentInfo>, ClientError> {
        let shard = shard.to_string();
        match self.call(&Request::ListSegments { shard })? {
            Response::Segments(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// One segment's summary.
    pub fn describe_segment(
        &mut self,
        shard: &str,
        base_offset: u64,
    ) -> Result<SegmentInfo, ClientError> {
        let shard = shard.to_string();
        match self.call(&Request::DescribeSegment { shard, base_offset })? {
            Response::Segment(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Seals the `Write` segment; returns its base offset.
    pub fn seal_segment(&mut self, shard: &str) -> Result<u64, ClientError> {
        let shard = shard.to_string();
        match self.call(&Request::SealSegment { shard })? {
            Response::Sealed(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes the oldest, sealed segment.
    pub fn delete_segment(&mut self, shard: &str, base_offset: u64) -> Result<(), ClientError> {
        let shard = shard.to_string();
        self.call(&Request::DeleteSegment { shard, base_offset })
            .map(|_| ())
    }

    /// Commits the next offset `group` will read.
    pub fn commit_offset(
        &mut self,
        shard: &str,
        group: &str,
        offset: u64,
    ) -> Result<(), ClientError> {
        let (shard, group) = (shard.to_string(), group.to_string());
        self.call(&Request::CommitOffset {
            shard,
            group,
            offset,
        })
        .map(|_| ())
    }

    /// The offset `group` committed.
    pub fn get_offset(&mut self, shard: &str, group: &str) -> Result<Option<u64>, ClientError> {
        let (shard, group) = (shard.to_string(), group.to_string());
        self.offset_answer(&Request::GetOffset { shard, group })
    }

    fn offset_answer(&mut self, req: &Request) -> Result<Option<u64>, ClientError> {
        match self.call(req)? {
            Response::Offset(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }
}

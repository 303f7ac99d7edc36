//! The journal RPC server: on every journal core, a listener on the same
//! port (SO_REUSEPORT spreads connections over cores); each connection reads
//! frames and serves up to [`PIPELINE`] of them at once through the
//! [`Journal`] handle (a client may send requests without waiting for the
//! answers), and writes the answers in the order of the requests. A request
//! that does not decode, or a frame over the size limit, gets an error
//! answer and the connection goes on.

use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::engine::Journal;
use crate::error::{JournalError, Result};
use crate::wire::{self, ErrorCode, RemoteError, MAX_FRAME};

/// Connections served at once on one core; more wait in the kernel backlog.
const MAX_CONNECTIONS: u64 = 4096;
/// Requests of one connection served at once; further frames are not read
/// until the oldest is answered.
pub const PIPELINE: usize = 64;

/// Binds the listener of this core.
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| JournalError::io(format!("binding journal RPC on {addr}"), e))
}

/// Accepts and serves connections until the task is dropped.
pub async fn serve(listener: TcpListener, journal: Journal) {
    let permits = Rc::new(glommio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.acquire_static_permit(1).await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let journal = journal.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            if let Err(e) = connection(stream, journal).await {
                tracing::debug!(?peer, error = %e, "journal connection ended");
            }
            drop(permit);
        })
        .detach();
    }
}

/// What one frame turned out to be.
enum Frame {
    /// The bytes of a frame.
    Bytes(Vec<u8>),
    /// A frame over the limit, skipped.
    TooLarge(usize),
}

async fn read_frame(
    stream: &mut (impl futures_lite::AsyncRead + Unpin),
) -> std::io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        let mut left = len;
        let mut sink = vec![0u8; 64 << 10];
        while left > 0 {
            let n = left.min(sink.len());
            stream.read_exact(&mut sink[..n]).await?;
            left -= n;
        }
        return Ok(Some(Frame::TooLarge(len)));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(Some(Frame::Bytes(buf)))
}

async fn answer(journal: &Journal, frame: Frame) -> Vec<u8> {
    let (id, result) = match frame {
        Frame::TooLarge(len) => (
            0,
            Err(RemoteError {
                code: ErrorCode::TooLarge,
                message: format!("frame of {len} bytes exceeds {MAX_FRAME}"),
            }),
        ),
        Frame::Bytes(buf) => match wire::decode_request(&buf) {
            Ok((id, req)) => (
                id,
                journal.call(req).await.map_err(|e| RemoteError::from(&e)),
            ),
            Err(bad) => (
                bad.id,
                Err(RemoteError {
                    code: ErrorCode::BadRequest,
                    message: bad.reason,
                }),
            ),
        },
    };
    wire::frame(&wire::encode_response(id, &result))
}

async fn connection(stream: TcpStream, journal: Journal) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    tracing::trace!(peer = ?stream.peer_addr().ok(), "journal connection accepted");
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    // Each request is served by a task of its own; the tasks queue in
    // request order and the answers are written in that order.
    let (queue, served) = glommio::channels::local_channel::new_bounded(PIPELINE);
    let read_side = async move {
        while let Some(frame) = read_frame(&mut reader).await? {
            let journal = journal.clone();
            let task = glommio::spawn_local(async move { answer(&journal, frame).await });
            if queue.send(task).await.is_err() {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let write_side = async move {
        while let Some(task) = served.recv().await {
            let out = task.await;
            writer.write_all(&out).await?;
            tracing::trace!(bytes = out.len(), "journal answer sent");
        }
        Ok::<(), std::io::Error>(())
    };
    let (read, written) = futures_lite::future::zip(read_side, write_side).await;
    read.and(written)
}

//! The member's TCP listener. A connection starts with a 4-byte magic: Raft
//! peers (`RPRF`, then their node id) send Raft message frames that go to the
//! Raft loop; RPC clients (`RPCL`) send request frames.
//!
//! An RPC connection may pipeline requests. Each runs as its own task, at most
//! [`MAX_INFLIGHT`] per connection (the connection is not read further until
//! one finishes); responses are written in batches by one writer task.

use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::frame::{put_frame, read_frame, MAGIC_RAFT, MAGIC_RPC};
use crate::node::{Input, NodeHandle};
use crate::service::Service;
use crate::wire::{decode_request, encode_response};

/// Requests in flight per RPC connection.
pub const MAX_INFLIGHT: usize = 1024;
/// Responses written in one batch at most.
const WRITE_BATCH: usize = 256;

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, node: NodeHandle, service: Service) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let node = node.clone();
                let service = service.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, node, service).await {
                        tracing::debug!(%peer, "connection closed: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    node: NodeHandle,
    service: Service,
) -> std::io::Result<()> {
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).await?;
    if &magic == MAGIC_RAFT {
        raft_peer(stream, node).await
    } else if &magic == MAGIC_RPC {
        rpc_client(stream, service).await
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "unknown connection preamble",
        ))
    }
}

async fn raft_peer(mut stream: TcpStream, node: NodeHandle) -> std::io::Result<()> {
    let from = stream.read_u64().await?;
    tracing::debug!(from, "raft peer connected");
    let mut buf = Vec::new();
    while read_frame(&mut stream, &mut buf).await? {
        match Message::parse_from_bytes(&buf) {
            Ok(m) => {
                // A full inbox drops the message; Raft retransmits.
                node.send(Input::Raft(Box::new(m)));
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ));
            }
        }
    }
    Ok(())
}

async fn rpc_client(stream: TcpStream, service: Service) -> std::io::Result<()> {
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(MAX_INFLIGHT);
    let writer_task = tokio::spawn(write_responses(writer, rx));
    let permits = Arc::new(Semaphore::new(MAX_INFLIGHT));
    let mut buf = Vec::new();
    while read_frame(&mut reader, &mut buf).await? {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let tx = tx.clone();
        match decode_request(&buf) {
            Ok(env) => {
                let service = service.clone();
                tokio::spawn(async move {
                    let id = env.id;
                    let result = service.execute(env).await;
                    let _ = tx.send(encode_response(id, &result)).await;
                    drop(permit);
                });
            }
            Err((id, e)) => {
                let _ = tx.send(encode_response(id, &Err(e))).await;
            }
        }
    }
    drop(tx);
    let _ = writer_task.await;
    Ok(())
}

async fn write_responses(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        put_frame(&mut buf, &first);
        for _ in 1..WRITE_BATCH {
            match rx.try_recv() {
                Ok(r) => put_frame(&mut buf, &r),
                Err(_) => break,
            }
        }
        if writer.write_all(&buf).await.is_err() {
            return;
        }
    }
}

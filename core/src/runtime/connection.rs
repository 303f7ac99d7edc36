//! One client connection: read CONNECT, hand the socket to the owner core
//! if needed, then (in a task of its own, smaller than the one that read
//! CONNECT) a read loop feeding the broker. The write side is
//! [`super::conn_io::ConnIo`].

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use glommio::net::TcpStream;
use glommio::GlommioError;
use robustmq_protocol::mqtt::{
    ConnAck, Connect, DecodeError, Decoder, Packet, ProtocolVersion, ReasonCode,
};

use super::conn_io::ConnIo;
use super::core_loop::Core;
use super::HandOff;
use crate::broker::{route_connect, ConnId, ConnectRoute};
use tracing::Instrument;

/// Bytes asked of the socket per read, at most.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes asked of an idle connection's socket: the read buffer starts this
/// small (memory per idle connection) and doubles while reads fill it.
const MIN_READ_CHUNK: usize = 64;

enum FirstPacket {
    Connect(Box<Connect>),
    Invalid(DecodeError),
    Closed,
}

/// Reads until CONNECT is decoded.
async fn read_connect(
    stream: &mut TcpStream,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> glommio::Result<FirstPacket, ()> {
    loop {
        match decoder.decode(buf) {
            Ok(Some(Packet::Connect(c))) => return Ok(FirstPacket::Connect(c)),
            Ok(Some(_)) => unreachable!("a server decoder yields CONNECT first"),
            Ok(None) => {}
            Err(e) => return Ok(FirstPacket::Invalid(e)),
        }
        let start = buf.len();
        buf.resize(start + MIN_READ_CHUNK, 0);
        let n = stream.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Ok(FirstPacket::Closed);
        }
    }
}

/// A connection accepted on this core.
pub(crate) async fn serve(core: Rc<Core>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let config = core.config();
    let mut decoder = Decoder::new(config.max_packet_size as usize);
    let mut buf = BytesMut::with_capacity(MIN_READ_CHUNK);
    let timeout = Duration::from_secs(config.connect_timeout_secs);
    let first =
        glommio::timer::timeout(timeout, read_connect(&mut stream, &mut decoder, &mut buf)).await;
    let mut connect = match first {
        Ok(FirstPacket::Connect(c)) => c,
        Ok(FirstPacket::Invalid(e)) => {
            tracing::debug!(?peer, "invalid first packet: {e}");
            if matches!(
                e,
                DecodeError::UnsupportedProtocolVersion(_) | DecodeError::ProtocolNameMismatch(_)
            ) {
                // The client's version is unknown: answer in 3.1.1's form.
                let ack = ConnAck {
                    reason_code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                    ..Default::default()
                };
                write_and_close(&mut stream, ProtocolVersion::V3_1_1, ack).await;
            }
            return;
        }
        Ok(FirstPacket::Closed) => return,
        Err(GlommioError::TimedOut(_)) => {
            tracing::debug!(?peer, "no CONNECT in time");
            return;
        }
        Err(e) => {
            tracing::debug!(?peer, "read failed before CONNECT: {e}");
            return;
        }
    };
    let version = connect.protocol;
    match route_connect(&mut connect, core.cores(), || core.assign_client_id()) {
        ConnectRoute::Refuse(ack) => write_and_close(&mut stream, version, *ack).await,
        ConnectRoute::Owner {
            core: owner,
            assigned,
        } if owner != core.id() => match super::dup_fd(stream.as_raw_fd()) {
            Ok(fd) => core.hand_off(
                owner,
                HandOff {
                    fd,
                    connect,
                    assigned,
                    leftover: buf.freeze(),
                    peer,
                },
            ),
            Err(e) => tracing::warn!("cannot hand a connection over: {e}"),
        },
        // A task of its own: this one (sized for reading CONNECT and
        // refusing) ends, and an idle connection keeps only the smaller one.
        ConnectRoute::Owner { assigned, .. } => {
            glommio::spawn_local(serve_connected(
                core, stream, decoder, buf, connect, assigned, peer,
            ))
            .detach();
        }
    }
}

/// A connection handed over by the core that read its CONNECT.
pub(crate) async fn serve_handed_off(core: Rc<Core>, h: HandOff) {
    // SAFETY: the descriptor was duplicated for this hand-over and is owned
    // by `h.fd` alone; the stream takes that ownership.
    let stream = unsafe { TcpStream::from_raw_fd(h.fd.into_raw_fd()) };
    let config = core.config();
    let decoder = Decoder::with_version(h.connect.protocol, config.max_packet_size as usize);
    let buf = BytesMut::from(&h.leftover[..]);
    serve_connected(core, stream, decoder, buf, h.connect, h.assigned, h.peer).await;
}

async fn write_and_close(stream: &mut TcpStream, version: ProtocolVersion, ack: ConnAck) {
    let mut out = BytesMut::new();
    if Packet::ConnAck(ack).encode(version, &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
    }
}

async fn serve_connected(
    core: Rc<Core>,
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
    connect: Box<Connect>,
    assigned: bool,
    peer: Option<SocketAddr>,
) {
    let conn_id = core.new_conn_id();
    let span =
        tracing::debug_span!("conn", id = conn_id, client = %connect.client_id, core = core.id());
    let fd = stream.as_raw_fd();
    let (reader, writer) = futures_lite::io::split(stream);
    let io = Rc::new(ConnIo::new(
        conn_id,
        connect.protocol,
        fd,
        writer,
        Rc::downgrade(&core),
    ));
    core.conns.borrow_mut().insert(conn_id, io.clone());
    let ip = peer.map(|p| p.ip());
    core.broker
        .borrow_mut()
        .on_connect(conn_id, connect, assigned, ip, Instant::now());
    core.flush();
    read_loop(&core, conn_id, &io, reader, decoder, buf)
        .instrument(span)
        .await;
    if !io.closed() {
        core.broker
            .borrow_mut()
            .on_connection_lost(conn_id, Instant::now());
        core.flush();
        io.close();
    }
    io.wait_done().await;
    core.conns.borrow_mut().remove(&conn_id);
    io.release_socket();
}

/// Decodes and hands to the broker what is buffered, then reads more;
/// returns when the socket ends or the broker closes the connection.
async fn read_loop(
    core: &Rc<Core>,
    conn_id: ConnId,
    io: &ConnIo,
    mut reader: ReadHalf<TcpStream>,
    mut decoder: Decoder,
    mut buf: BytesMut,
) {
    let config = core.config();
    let limit = config.max_outbound_buffer_bytes;
    let mut chunk = MIN_READ_CHUNK;
    loop {
        let now = Instant::now();
        let mut failed = false;
        let mut incomplete = false;
        {
            let mut broker = core.broker.borrow_mut();
            while !io.closed() {
                match decoder.decode(&mut buf) {
                    Ok(Some(p)) => {
                        broker.on_packet(conn_id, p, now);
                        // Held: the rest of the buffer waits for the release.
                        if broker.is_held(conn_id) {
                            break;
                        }
                    }
                    Ok(None) => {
                        incomplete = true;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(conn_id, "bad packet: {e}");
                        broker.on_protocol_error(conn_id, e.reason_code(), now);
                        failed = true;
                        break;
                    }
                }
            }
        }
        core.flush();
        if failed || io.closed() {
            return;
        }
        // Back-pressure: a client whose own answers pile up, or a core
        // whose messages to other cores pile up, stops being read.
        while !io.closed() && (io.buffered() > limit || core.mesh_backlog_full()) {
            if io.done() {
                return;
            }
            if io.buffered() > limit {
                io.wait_drained().await;
            } else {
                glommio::timer::sleep(Duration::from_micros(200)).await;
            }
        }
        // Back-pressure: a subscriber this client publishes to is congested.
        io.wait_released().await;
        if !incomplete {
            // Whole packets are still buffered: they go before any read.
            continue;
        }
        // glommio reads a socket that has data without yielding: a busy
        // publisher's loop would never let this core's writers run.
        futures_lite::future::yield_now().await;
        let start = buf.len();
        buf.resize(start + chunk, 0);
        let n = reader.read(&mut buf[start..]).await.unwrap_or(0);
        buf.truncate(start + n);
        chunk = if n == chunk {
            (chunk * 2).min(READ_CHUNK)
        } else if n < chunk / 4 {
            (chunk / 2).max(MIN_READ_CHUNK)
        } else {
            chunk
        };
        if n == 0 {
            return;
        }
        core.with_metrics(|m| m.bytes_received.fetch_add(n as u64, Relaxed));
    }
}

//! One MQTT client connection over a plain tokio socket, with the
//! `robustmq-protocol` codec: CONNECT/CONNACK, SUBSCRIBE/SUBACK, and the
//! buffers the scenario drivers batch their reads and writes in.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use robustmq_protocol::mqtt::{
    ConnAck, Connect, Decoder, Packet, Properties, PropertyValues, ProtocolVersion, QoS,
    ReasonCode, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes the read buffer keeps free before each read.
pub const READ_RESERVE: usize = 64 * 1024;

/// How clients connect.
#[derive(Debug, Clone)]
pub struct ConnOpts {
    pub addr: SocketAddr,
    pub version: ProtocolVersion,
    pub keep_alive: u16,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean: bool,
    /// Session expiry interval (5.0), seconds.
    pub session_expiry: Option<u32>,
    /// How long a connection and its CONNACK may take.
    pub timeout: Duration,
}

/// A connected client.
pub struct Conn {
    pub stream: TcpStream,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub decoder: Decoder,
    pub version: ProtocolVersion,
    /// The broker's Receive Maximum (5.0), or 65535.
    pub server_receive_max: u16,
}

fn proto_err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Conn {
    /// Opens a TCP connection, sends CONNECT and waits for CONNACK.
    pub async fn connect(opts: &ConnOpts, client_id: &str) -> io::Result<(Conn, ConnAck)> {
        tokio::time::timeout(opts.timeout, Self::connect_inner(opts, client_id))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no CONNACK in time"))?
    }

    async fn connect_inner(opts: &ConnOpts, client_id: &str) -> io::Result<(Conn, ConnAck)> {
        let stream = TcpStream::connect(opts.addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(4096),
            decoder: Decoder::with_version(opts.version, 1 << 24),
            version: opts.version,
            server_receive_max: u16::MAX,
        };
        let properties = PropertyValues {
            session_expiry_interval: opts.session_expiry,
            receive_maximum: Some(u16::MAX),
            ..Default::default()
        }
        .into();
        let connect = Connect {
            protocol: opts.version,
            clean_start: opts.clean,
            keep_alive: opts.keep_alive,
            properties,
            client_id: client_id.to_string().into(),
            will: None,
            username: None,
            password: None,
        };
        conn.send(&Packet::Connect(Box::new(connect))).await?;
        match conn.read_packet().await? {
            Packet::ConnAck(ack) if !ack.reason_code.is_error() => {
                if let Some(m) = ack.properties.receive_maximum {
                    conn.server_receive_max = m.max(1);
                }
                Ok((conn, ack))
            }
            Packet::ConnAck(ack) => Err(proto_err(format!("CONNACK refused: {}", ack.reason_code))),
            other => Err(proto_err(format!(
                "expected CONNACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// Encodes a packet into the write buffer.
    pub fn queue(&mut self, packet: &Packet) -> io::Result<()> {
        packet
            .encode(self.version, &mut self.wbuf)
            .map_err(|e| proto_err(format!("encode: {e}")))
    }

    /// Encodes a packet and writes everything buffered.
    pub async fn send(&mut self, packet: &Packet) -> io::Result<()> {
        self.queue(packet)?;
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// Reads until one whole packet is decoded.
    pub async fn read_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(p) = self
                .decoder
                .decode(&mut self.rbuf)
                .map_err(|e| proto_err(format!("decode: {e}")))?
            {
                return Ok(p);
            }
            self.rbuf.reserve(4096);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Subscribes to `filters` at `qos` and waits for the SUBACK; fails if
    /// the broker refused any filter. Packets that arrive before the SUBACK
    /// (retained messages) are dropped.
    pub async fn subscribe(&mut self, filters: &[String], qos: QoS) -> io::Result<()> {
        let sub = Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: filters
                .iter()
                .map(|f| SubscribeFilter {
                    filter: f.clone().into(),
                    options: SubscriptionOptions {
                        qos,
                        ..Default::default()
                    },
                })
                .collect(),
        };
        self.send(&Packet::Subscribe(sub)).await?;
        loop {
            match self.read_packet().await? {
                Packet::SubAck(ack) => {
                    if let Some(bad) = ack.reason_codes.iter().find(|c| c.is_error()) {
                        return Err(proto_err(format!("SUBACK refused: {bad}")));
                    }
                    return Ok(());
                }
                Packet::Publish(_) | Packet::PingResp => continue,
                other => {
                    return Err(proto_err(format!(
                        "expected SUBACK, got {:?}",
                        other.packet_type()
                    )))
                }
            }
        }
    }

    /// Sends DISCONNECT (best effort) and closes.
    pub async fn disconnect(mut self) {
        let d = Packet::Disconnect(robustmq_protocol::mqtt::Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        ));
        let _ = tokio::time::timeout(Duration::from_millis(500), self.send(&d)).await;
        let _ = self.stream.shutdown().await;
    }
}

/// Parses `3.1.1`, `4`, `5`, `5.0`, `3.1`, `3`.
pub fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "3.1.1" | "4" | "311" => Ok(ProtocolVersion::V3_1_1),
        "5" | "5.0" | "50" => Ok(ProtocolVersion::V5),
        "3.1" | "3" | "31" => Ok(ProtocolVersion::V3_1),
        _ => Err(format!("unknown MQTT version {s:?} (3.1, 3.1.1 or 5)")),
    }
}

/// Parses a QoS 0, 1 or 2.
pub fn parse_qos(s: &str) -> Result<QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("QoS must be 0, 1 or 2, not {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_qos_parse() {
        assert_eq!(parse_version("3.1.1"), Ok(ProtocolVersion::V3_1_1));
        assert_eq!(parse_version("5"), Ok(ProtocolVersion::V5));
        assert!(parse_version("6").is_err());
        assert_eq!(parse_qos("2"), Ok(QoS::ExactlyOnce));
        assert!(parse_qos("3").is_err());
    }
}

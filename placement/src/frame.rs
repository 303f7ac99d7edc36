//! Length-prefixed frames: a big-endian u32 length, then that many bytes.
//! Used by the Raft transport and the RPC connections alike.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame accepted (a snapshot of the whole state fits).
pub const MAX_FRAME: usize = 64 << 20;

/// Connection preamble of a Raft peer (followed by its u64 node id).
pub const MAGIC_RAFT: &[u8; 4] = b"RPRF";
/// Connection preamble of an RPC client.
pub const MAGIC_RPC: &[u8; 4] = b"RPCL";

/// Appends one frame to `buf`.
pub fn put_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
}

/// Reads one frame into `buf` (replacing its contents). `Ok(false)` on a
/// clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let mut wire = Vec::new();
        put_frame(&mut wire, b"hello");
        put_frame(&mut wire, b"");
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert!(read_frame(&mut r, &mut buf).await.unwrap());
        assert_eq!(buf, b"hello");
        assert!(read_frame(&mut r, &mut buf).await.unwrap());
        assert!(buf.is_empty());
        assert!(!read_frame(&mut r, &mut buf).await.unwrap());
        let big = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let mut r = &big[..];
        assert!(read_frame(&mut r, &mut buf).await.is_err());
    }
}

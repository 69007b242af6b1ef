//! Packet framing shared by the relay and the echo: due's packet is a big-endian u32 size, then the
//! header byte, route, seq and body. On the relay–echo link every packet travels as a link frame: a u32
//! size covering what follows, the u32 id of the client connection, then the packet after its size field.

use bytes::{Buf, BytesMut};

/// Bytes of a size field.
pub(crate) const SIZE_BYTES: usize = 4;
/// Bytes of the connection id in a link frame.
pub(crate) const ID_BYTES: usize = 4;
/// Bytes read from a socket at once.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Takes the next whole frame (size field removed) from the front of `buf`, if it has arrived.
///
/// # Errors
/// A size above `max`: the peer does not speak this framing, and the connection is dropped.
pub(crate) fn split(buf: &mut BytesMut, max: usize) -> anyhow::Result<Option<BytesMut>> {
    if buf.len() < SIZE_BYTES {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    anyhow::ensure!(size <= max, "frame of {size} bytes exceeds the {max}-byte limit");
    if buf.len() < SIZE_BYTES + size {
        if buf.capacity() < SIZE_BYTES + size {
            buf.reserve(SIZE_BYTES + size - buf.len());
        }
        return Ok(None);
    }
    buf.advance(SIZE_BYTES);
    Ok(Some(buf.split_to(size)))
}

/// Appends a size field for `len` bytes that the caller appends next.
pub(crate) fn put_size(out: &mut BytesMut, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_frames_only() {
        let mut buf = BytesMut::new();
        put_size(&mut buf, 3);
        buf.extend_from_slice(b"abc");
        put_size(&mut buf, 2);
        buf.extend_from_slice(b"d");
        assert_eq!(split(&mut buf, 10).ok().flatten().as_deref(), Some(&b"abc"[..]));
        assert_eq!(split(&mut buf, 10).ok().flatten(), None);
        buf.extend_from_slice(b"e");
        assert_eq!(split(&mut buf, 10).ok().flatten().as_deref(), Some(&b"de"[..]));
        put_size(&mut buf, 11);
        assert!(split(&mut buf, 10).is_err());
    }
}

//! Framing on the VMM ⇄ agent byte stream (virtio-console): every message is one frame,
//! `"dv"`, a version byte, a reserved byte, a little-endian u32 payload length, then the
//! payload. Both sides bound the length, so a corrupt or hostile stream costs at most
//! one bounded buffer and a clear error, never unbounded memory or a panic.

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"dv";
/// The framing version this build writes and accepts.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 8;
/// The largest payload either side accepts.
pub const MAX_PAYLOAD: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame payload of {len} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge { len: usize },
    #[error("the stream is out of step: expected the frame magic \"dv\", found {found:02x?}; skipped to the next magic")]
    BadMagic { found: [u8; 2] },
    #[error("frame version {found} is not supported (this side speaks version {VERSION})")]
    BadVersion { found: u8 },
}

/// One frame carrying `payload`.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge { len: payload.len() });
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.push(VERSION);
    frame.push(0);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Bytes received but not yet returned as a frame (a snapshot keeps them; pushing
    /// them into a new decoder restores it).
    pub fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// Adds bytes from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete payload, `None` until one is complete, or an error for a bad
    /// header. After an error the decoder has skipped past the bad bytes, so calling
    /// again continues with the rest of the stream.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        if self.buffer.len() < HEADER_LEN {
            return None;
        }
        if self.buffer[..2] != MAGIC {
            let found = [self.buffer[0], self.buffer[1]];
            self.resync();
            return Some(Err(FrameError::BadMagic { found }));
        }
        if self.buffer[2] != VERSION {
            let found = self.buffer[2];
            self.resync();
            return Some(Err(FrameError::BadVersion { found }));
        }
        let len = u32::from_le_bytes([
            self.buffer[4],
            self.buffer[5],
            self.buffer[6],
            self.buffer[7],
        ]) as usize;
        if len > MAX_PAYLOAD {
            self.resync();
            return Some(Err(FrameError::TooLarge { len }));
        }
        if self.buffer.len() < HEADER_LEN + len {
            return None;
        }
        let payload = self.buffer[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buffer.drain(..HEADER_LEN + len);
        Some(Ok(payload))
    }

    /// Drops bytes up to the next possible magic (never the first byte's own position).
    fn resync(&mut self) {
        let skip = self.buffer[1..]
            .windows(2)
            .position(|w| w == MAGIC)
            .map_or(self.buffer.len(), |i| i + 1);
        self.buffer.drain(..skip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_arbitrary_splits() {
        let mut stream = encode(b"hello").unwrap();
        stream.extend(encode(b"").unwrap());
        stream.extend(encode(&[7u8; 1000]).unwrap());
        for piece in [1, 3, 8, 64] {
            let mut decoder = Decoder::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                decoder.push(chunk);
                while let Some(frame) = decoder.next_frame() {
                    got.push(frame.unwrap());
                }
            }
            assert_eq!(got, vec![b"hello".to_vec(), Vec::new(), vec![7u8; 1000]]);
        }
    }

    #[test]
    fn garbage_is_an_error_then_the_stream_recovers() {
        let mut decoder = Decoder::new();
        decoder.push(b"xxxxxxxxxx");
        decoder.push(&encode(b"ok").unwrap());
        let mut errors = 0;
        let mut frames = Vec::new();
        while let Some(next) = decoder.next_frame() {
            match next {
                Ok(f) => frames.push(f),
                Err(FrameError::BadMagic { .. }) => errors += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(errors >= 1);
        assert_eq!(frames, vec![b"ok".to_vec()]);
    }

    #[test]
    fn oversized_and_wrong_version_frames_are_refused() {
        assert_eq!(
            encode(&vec![0; MAX_PAYLOAD + 1]),
            Err(FrameError::TooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
        let mut decoder = Decoder::new();
        decoder.push(b"dv\x01\x00\xff\xff\xff\xff");
        assert!(matches!(
            decoder.next_frame(),
            Some(Err(FrameError::TooLarge { .. }))
        ));
        let mut decoder = Decoder::new();
        decoder.push(b"dv\x09\x00\x00\x00\x00\x00");
        assert_eq!(
            decoder.next_frame(),
            Some(Err(FrameError::BadVersion { found: 9 }))
        );
    }
}

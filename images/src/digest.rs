//! sha256 digests, and readers/writers that compute them as bytes stream through.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// Checks a `sha256:<64 hex>` digest string. Digests name files in the store, so anything
/// else (other algorithms, `../`, upper case) is refused rather than joined into a path.
pub fn parse(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let ok = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hex)
}

pub fn of_bytes(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A reader that hashes and counts what passes through it.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream (so the digest covers all of it) and returns (digest, bytes).
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format!("sha256:{:x}", self.hasher.finalize()), self.count))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{:x}", self.hasher.finalize()),
            self.count,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_non_sha256_and_paths() {
        let good = of_bytes(b"");
        assert!(parse(&good).is_some());
        assert!(parse("sha256:../../etc/passwd").is_none());
        assert!(parse("sha512:00").is_none());
        assert!(parse(&good.to_uppercase()).is_none());
    }

    #[test]
    fn reader_and_writer_agree() {
        let (d1, n1) = HashReader::new(&b"hello"[..]).finish().unwrap();
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (_, d2, n2) = w.finish();
        assert_eq!((d1, n1), (d2, n2));
        assert_eq!(n1, 5);
    }
}

//! Splits a byte stream into lines of bounded length.

/// One line without its newline. `cut`: the line was longer than the bound; `bytes` then
/// holds its first `max + 1` bytes and the rest up to the newline was dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub bytes: Vec<u8>,
    pub cut: bool,
}

#[derive(Debug)]
pub struct Lines {
    max: usize,
    buf: Vec<u8>,
    /// Dropping the rest of an over-long line until its newline.
    skipping: bool,
}

impl Lines {
    pub fn new(max: usize) -> Self {
        Lines {
            max,
            buf: Vec::new(),
            skipping: false,
        }
    }

    /// Feeds `bytes`, returning the lines they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if !self.skipping {
                    out.push(Line {
                        bytes: std::mem::take(&mut self.buf),
                        cut: false,
                    });
                }
                self.skipping = false;
            } else if !self.skipping {
                self.buf.push(b);
                if self.buf.len() > self.max {
                    out.push(Line {
                        bytes: std::mem::take(&mut self.buf),
                        cut: true,
                    });
                    self.skipping = true;
                }
            }
        }
        out
    }

    /// The last, unterminated line at the end of the stream; resets the splitter.
    pub fn finish(&mut self) -> Option<Line> {
        let skipping = std::mem::replace(&mut self.skipping, false);
        let rest = std::mem::take(&mut self.buf);
        (!rest.is_empty() && !skipping).then_some(Line {
            bytes: rest,
            cut: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: Vec<Line>) -> Vec<(String, bool)> {
        lines
            .into_iter()
            .map(|l| (String::from_utf8(l.bytes).unwrap(), l.cut))
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_and_long_lines_are_cut() {
        let mut l = Lines::new(4);
        assert!(l.feed(b"a").is_empty());
        assert_eq!(
            text(l.feed(b"b\nc\n")),
            [("ab".into(), false), ("c".into(), false)]
        );
        assert_eq!(
            text(l.feed(b"abcdefgh\nnext\n")),
            [("abcde".into(), true), ("next".into(), false)]
        );
        l.feed(b"tail");
        assert_eq!(l.finish().map(|l| l.bytes), Some(b"tail".to_vec()));
        assert_eq!(l.finish(), None);
    }
}

//! The `detvm.run=` kernel command-line parameter: the service's argv until image
//! configs are wired. Each argument is %-escaped (every byte outside
//! `A-Za-z0-9` and `/._-` becomes `%XX`) and arguments are joined by `,`. So
//! `["/bin/sh", "-c", "echo hi"]` is `detvm.run=/bin/sh,-c,echo%20hi`.

/// The kernel command-line parameter name (with its `=`).
pub const PARAM: &str = "detvm.run=";

fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-')
}

/// `argv` as the value of `detvm.run=`.
pub fn encode(argv: &[&str]) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for &b in arg.as_bytes() {
            if plain(b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The argv in a `detvm.run=` value, or why it is malformed.
pub fn decode(value: &str) -> Result<Vec<Vec<u8>>, String> {
    if value.is_empty() {
        return Err("detvm.run= is empty".into());
    }
    value
        .split(',')
        .map(|arg| {
            let bytes = arg.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let hex = bytes
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| format!("bad %-escape in detvm.run argument {arg:?}"))?;
                    out.push(hex);
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            Ok(out)
        })
        .collect()
}

/// The `detvm.run=` value in a kernel command line (`/proc/cmdline`), if present.
pub fn find(cmdline: &str) -> Option<&str> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(PARAM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_round_trips_through_the_cmdline() {
        let argv = ["/bin/sh", "-c", "echo out; echo err >&2; exit 3", "a,b%"];
        let value = encode(&argv);
        assert!(!value.contains(' '));
        let cmdline = format!("quiet {PARAM}{value} console=ttyS0\n");
        let got = decode(find(&cmdline).unwrap()).unwrap();
        let want: Vec<Vec<u8>> = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
        assert_eq!(got, want);
        assert_eq!(
            encode(&["/bin/sh", "-c", "echo hi"]),
            "/bin/sh,-c,echo%20hi"
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(decode("").is_err());
        assert!(decode("/bin/x%2").is_err());
        assert!(decode("/bin/x%zz").is_err());
        assert!(find("quiet").is_none());
    }
}

//! The test driver of detvm's `kv` example, run by the test composer through the
//! scripts in `/opt/antithesis/test/v1/main/`. It reports with the Antithesis SDK,
//! which writes to `$ANTITHESIS_SDK_LOCAL_OUTPUT` (set by detvm's guest agent).
//!
//! - `first`: wait for the server, then declare setup complete.
//! - `write`: a burst of writes, each read back at once; acknowledged writes are logged.
//! - `check`: every acknowledged write is still readable with its value.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use antithesis_sdk::{antithesis_init, assert_always, assert_reachable, assert_sometimes};
use serde_json::json;

const SERVER: &str = "kv:7000";
const ACKED: &str = "/var/lib/kv-driver/acked";

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect() -> std::io::Result<Client> {
        let stream = TcpStream::connect(SERVER)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn call(&mut self, request: &str) -> std::io::Result<String> {
        writeln!(self.writer, "{request}")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }
}

fn random() -> u64 {
    antithesis_sdk::random::get_random()
}

fn first() {
    for _ in 0..300 {
        if Client::connect().is_ok() {
            assert_reachable!("the kv server accepts connections during setup");
            antithesis_sdk::lifecycle::setup_complete(&json!({ "server": SERVER }));
            println!("kv server reachable; setup complete");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("kv server never became reachable");
    std::process::exit(1);
}

fn write() {
    let mut client = Client::connect().unwrap_or_else(|e| {
        eprintln!("cannot connect to {SERVER}: {e}");
        std::process::exit(1);
    });
    let prefix = random() % 1_000_000;
    std::fs::create_dir_all("/var/lib/kv-driver").expect("state folder");
    let mut acked = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ACKED)
        .expect("acked log");
    let mut overwrote = false;
    for i in 0..20 {
        let key = format!("k{prefix}-{}", random() % 8);
        let value = format!("v{i}-{}", random() % 1000);
        let before = client.call(&format!("GET {key}")).unwrap_or_default();
        let reply = client
            .call(&format!("SET {key} {value}"))
            .unwrap_or_default();
        if reply != "OK" {
            continue;
        }
        // One write per line: parallel drivers append to this file, and `writeln!`
        // would write the line and its newline separately, letting lines interleave.
        acked
            .write_all(format!("{key} {value}\n").as_bytes())
            .expect("acked log write");
        overwrote |= before.starts_with("VALUE ");
        let read = client.call(&format!("GET {key}")).unwrap_or_default();
        assert_always!(
            read == format!("VALUE {value}"),
            "a read right after an acknowledged write returns it",
            &json!({ "key": key, "wrote": value, "read": read })
        );
    }
    assert_sometimes!(overwrote, "a write overwrites an earlier value", &json!({}));
    println!("wrote 20 keys under prefix {prefix}");
}

fn check() {
    let text = std::fs::read_to_string(ACKED).unwrap_or_default();
    let mut latest = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            latest.insert(k.to_string(), v.to_string());
        }
    }
    let mut client = Client::connect().expect("server reachable for the final check");
    let mut lost = Vec::new();
    for (key, value) in &latest {
        let read = client.call(&format!("GET {key}")).unwrap_or_default();
        if read != format!("VALUE {value}") {
            lost.push(json!({ "key": key, "expected": value, "read": read }));
        }
    }
    assert_always!(
        lost.is_empty(),
        "every acknowledged write is readable at the end",
        &json!({ "checked": latest.len(), "lost": lost })
    );
    println!("checked {} keys, {} lost", latest.len(), lost.len());
}

fn main() {
    antithesis_init();
    match std::env::args().nth(1).as_deref() {
        Some("first") => first(),
        Some("write") => write(),
        Some("check") => check(),
        _ => {
            eprintln!("usage: kv-driver first|write|check");
            std::process::exit(2);
        }
    }
}

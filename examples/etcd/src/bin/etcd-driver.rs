//! The test driver of detvm's `etcd` example: Jepsen-style workloads against a real
//! three-node etcd cluster through etcd's v3 JSON gateway (plain HTTP/1.0 over
//! `std::net`, base64 keys and values). Run by the test composer through the scripts in
//! `/opt/antithesis/test/v1/main/`; reports with the Antithesis SDK.
//!
//! - `first`: wait until the cluster accepts a write, then declare setup complete.
//! - `add`: the set workload: add unique elements (`set/<id>` keys), each to a random
//!   member, retried on another member when a request fails. Attempts and acknowledged
//!   adds are logged in files shared by every driver run.
//! - `register`: one key written and read with linearizable reads; a read must never
//!   show an older revision than this client's last acknowledged write or last read.
//! - `check`: the final read of the set holds every acknowledged add, and nothing that
//!   was never attempted.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use antithesis_sdk::{antithesis_init, assert_always, assert_reachable, assert_sometimes};
use serde_json::{json, Value};

const MEMBERS: [&str; 3] = ["etcd1", "etcd2", "etcd3"];
const STATE: &str = "/var/lib/etcd-driver";
const REGISTER: &str = "register";
/// A driver run stops starting requests after this long (the guest's monotonic clock
/// follows virtual time), so a cluster without a quorum cannot make it hang.
const RUN_LIMIT: Duration = Duration::from_secs(15);

fn random() -> u64 {
    antithesis_sdk::random::get_random()
}

mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in text.bytes().filter(|&c| c != b'=') {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        Some(out)
    }
}

/// One request to a member's JSON gateway: `Ok(body)` for HTTP 200, else why not.
fn post(member: &str, path: &str, body: &Value) -> Result<Value, String> {
    let addr = (member, 2379)
        .to_socket_addrs()
        .map_err(|e| format!("{member}: {e}"))?
        .next()
        .ok_or_else(|| format!("{member}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{member}: connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(4)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(4))))
        .map_err(|e| e.to_string())?;
    let body = body.to_string();
    // HTTP/1.0: the answer is the rest of the stream, never chunked.
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {member}:2379\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{member}: send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("{member}: receive: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{member}: malformed response {response:?}"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("{member}: HTTP {status}: {body}"));
    }
    serde_json::from_str(body).map_err(|e| format!("{member}: {e}: {body}"))
}

fn put(member: &str, key: &str, value: &str) -> Result<Value, String> {
    let body =
        json!({ "key": base64::encode(key.as_bytes()), "value": base64::encode(value.as_bytes()) });
    post(member, "/v3/kv/put", &body)
}

/// A linearizable range read of `key` up to `range_end` (exclusive), or `key` alone.
fn range(member: &str, key: &str, range_end: Option<&str>) -> Result<Value, String> {
    let mut body = json!({ "key": base64::encode(key.as_bytes()) });
    if let Some(end) = range_end {
        body["range_end"] = json!(base64::encode(end.as_bytes()));
    }
    post(member, "/v3/kv/range", &body)
}

/// An int64 field: the gateway writes them as strings, and leaves out zeros.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn random_member() -> &'static str {
    MEMBERS[random() as usize % MEMBERS.len()]
}

fn log(name: &str, line: &str) {
    std::fs::create_dir_all(STATE).expect("state folder");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{STATE}/{name}"))
        .expect("open log");
    // One write() for the whole line: `writeln!` writes the line and its newline
    // separately, and parallel drivers would interleave them.
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write log");
}

fn logged(name: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{STATE}/{name}")).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

fn first() {
    // The members elect a leader after they boot; give them a while (virtual time).
    for attempt in 0..120 {
        let member = MEMBERS[attempt % MEMBERS.len()];
        match put(member, "setup", "ok") {
            Ok(_) => {
                assert_reachable!("the etcd cluster accepts a write during setup");
                antithesis_sdk::lifecycle::setup_complete(&json!({ "member": member }));
                println!("cluster accepts writes (via {member}); setup complete");
                return;
            }
            Err(e) => eprintln!("waiting for the cluster: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("the etcd cluster never accepted a write");
    std::process::exit(1);
}

fn add() {
    let mut acked = 0;
    let deadline = Instant::now() + RUN_LIMIT;
    for _ in 0..20 {
        if Instant::now() > deadline {
            println!("run limit reached");
            break;
        }
        let element = format!("{:016x}", random());
        log("attempted", &element);
        let first = random() as usize % MEMBERS.len();
        let mut failures = Vec::new();
        for t in 0..MEMBERS.len() {
            let member = MEMBERS[(first + t) % MEMBERS.len()];
            match put(member, &format!("set/{element}"), "1") {
                Ok(_) => {
                    log("acked", &element);
                    acked += 1;
                    assert_sometimes!(
                        !failures.is_empty(),
                        "an add succeeds on another member after a failure",
                        &json!({ "element": element, "member": member, "failures": failures })
                    );
                    break;
                }
                Err(e) => failures.push(e),
            }
        }
        if failures.len() == MEMBERS.len() {
            eprintln!("add {element}: outcome unknown: {failures:?}");
        }
        std::thread::sleep(Duration::from_millis(random() % 200));
    }
    println!("{acked} adds acknowledged");
}

/// Reads the register: (the revision it was last written at, its value).
fn read_register(member: &str) -> Result<(i64, String), String> {
    let reply = range(member, REGISTER, None)?;
    let Some(kv) = reply["kvs"].get(0) else {
        return Ok((0, String::new()));
    };
    let value = base64::decode(kv["value"].as_str().unwrap_or(""))
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    Ok((int(&kv["mod_revision"]), value))
}

fn register() {
    let me = format!("{:08x}", random() as u32);
    // The newest revision this client knows the register reached.
    let mut known = 0i64;
    let mut known_from = String::from("nothing yet");
    let deadline = Instant::now() + RUN_LIMIT;
    for i in 0..20 {
        if Instant::now() > deadline {
            println!("run limit reached");
            break;
        }
        let member = random_member();
        if random().is_multiple_of(2) {
            let value = format!("{me}-{i}");
            if let Ok(reply) = put(member, REGISTER, &value) {
                let revision = int(&reply["header"]["revision"]);
                if revision > known {
                    known = revision;
                    known_from = format!("my write of {value} via {member}");
                }
            }
        } else {
            match read_register(member) {
                Ok((revision, value)) => {
                    assert_always!(
                        revision >= known,
                        "a register read is never older than what this client saw before",
                        &json!({ "member": member, "read_revision": revision, "read_value": value,
                                 "known_revision": known, "known_from": known_from })
                    );
                    if revision > known {
                        known = revision;
                        known_from = format!("a read of {value} via {member}");
                    }
                }
                Err(e) => {
                    assert_sometimes!(
                        true,
                        "a register read fails during a fault",
                        &json!({ "error": e })
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(random() % 200));
    }
    println!("register client {me}: last known revision {known}");
}

fn check() {
    // Faults are over and the network healed: a member answers soon.
    let mut reply = Err(String::new());
    let deadline = Instant::now() + Duration::from_secs(40);
    for attempt in 0.. {
        if Instant::now() > deadline {
            break;
        }
        reply = range(MEMBERS[attempt % MEMBERS.len()], "set/", Some("set0"));
        if reply.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let reply = reply.unwrap_or_else(|e| {
        eprintln!("the final read failed on every member: {e}");
        std::process::exit(1);
    });
    let read: BTreeSet<String> = reply["kvs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| base64::decode(kv["key"].as_str()?))
        .map(|k| {
            String::from_utf8_lossy(&k)
                .trim_start_matches("set/")
                .to_string()
        })
        .collect();
    let acked = logged("acked");
    let attempted = logged("attempted");
    let lost: Vec<&String> = acked.difference(&read).collect();
    let unexpected: Vec<&String> = read.difference(&attempted).collect();
    assert_always!(
        lost.is_empty(),
        "every acknowledged add is in the final read",
        &json!({ "acked": acked.len(), "read": read.len(), "lost": lost })
    );
    assert_always!(
        unexpected.is_empty(),
        "the final read holds only elements that were added",
        &json!({ "unexpected": unexpected })
    );
    let unknown_present = read.difference(&acked).count();
    println!(
        "final read: {} elements; {} acknowledged, {} attempted; {} lost; {} unacknowledged adds present",
        read.len(),
        acked.len(),
        attempted.len(),
        lost.len(),
        unknown_present
    );
}

fn main() {
    antithesis_init();
    match std::env::args().nth(1).as_deref() {
        Some("first") => first(),
        Some("add") => add(),
        Some("register") => register(),
        Some("check") => check(),
        _ => {
            eprintln!("usage: etcd-driver first|add|register|check");
            std::process::exit(2);
        }
    }
}

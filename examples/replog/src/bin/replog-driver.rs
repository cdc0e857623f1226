//! The test driver of detvm's `replog` example, run by the test composer through the
//! scripts in `/opt/antithesis/test/v1/main/`. It reports with the Antithesis SDK.
//!
//! - `first`: wait until the cluster acknowledges a write, then declare setup complete.
//! - `write`: a burst of unique writes to whichever node is primary, and reads from the
//!   replica. Every attempt and every acknowledgement is logged on the driver's volume
//!   (flushed, so the record survives a kill of the driver's VM).
//! - `check` (after the faults stopped and the network healed): wait for the two nodes
//!   to agree, then every acknowledged write must be in the final log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use antithesis_sdk::{antithesis_init, assert_always, assert_reachable, assert_sometimes};
use serde_json::json;

const NODES: [&str; 2] = ["log1", "log2"];
const PORT: u16 = 7300;
const STATE: &str = "/var/lib/replog-driver";

fn random() -> u64 {
    antithesis_sdk::random::get_random()
}

/// Seconds since this VM booted: close to the run's virtual time, to match a lost
/// write with the faults around it.
fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(String::from))
        .unwrap_or_default()
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(node: &str) -> std::io::Result<Conn> {
        let addr: SocketAddr = (node, PORT)
            .to_socket_addrs()?
            .next()
            .ok_or(std::io::ErrorKind::NotFound)?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_string())
    }

    fn call(&mut self, request: &str) -> std::io::Result<String> {
        self.writer.write_all(format!("{request}\n").as_bytes())?;
        self.line()
    }
}

/// A connection to each node, opened on demand and dropped on any error.
#[derive(Default)]
struct Cluster {
    conns: BTreeMap<&'static str, Conn>,
}

impl Cluster {
    fn call(&mut self, node: &'static str, request: &str) -> std::io::Result<String> {
        if !self.conns.contains_key(node) {
            self.conns.insert(node, Conn::open(node)?);
        }
        let conn = self.conns.get_mut(node).expect("just opened");
        let reply = conn.call(request);
        if reply.is_err() {
            self.conns.remove(node);
        }
        reply
    }

    fn status(&mut self, node: &'static str) -> Option<Status> {
        Status::parse(&self.call(node, "STATUS").ok()?)
    }

    fn read_log(&mut self, node: &'static str) -> std::io::Result<(u64, Vec<String>)> {
        let header = self.call(node, "READ")?;
        let bad = || std::io::Error::other(format!("bad READ reply `{header}`"));
        let w: Vec<&str> = header.split_whitespace().collect();
        let ["LOG", epoch, n] = w.as_slice() else {
            return Err(bad());
        };
        let (epoch, n): (u64, usize) = (
            epoch.parse().map_err(|_| bad())?,
            n.parse().map_err(|_| bad())?,
        );
        let conn = self.conns.get_mut(node).expect("connected");
        let log = (0..n)
            .map(|_| conn.line())
            .collect::<std::io::Result<_>>()?;
        Ok((epoch, log))
    }
}

/// A `STATUS role epoch len confirmed synced` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    primary: bool,
    epoch: u64,
    len: usize,
    confirmed: usize,
}

impl Status {
    fn parse(line: &str) -> Option<Status> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let ["STATUS", role, epoch, len, confirmed, _synced] = w.as_slice() else {
            return None;
        };
        Some(Status {
            primary: *role == "primary",
            epoch: epoch.parse().ok()?,
            len: len.parse().ok()?,
            confirmed: confirmed.parse().ok()?,
        })
    }

    fn describe(&self) -> String {
        let role = if self.primary { "primary" } else { "replica" };
        format!(
            "{role} of epoch {}, {} entries ({} confirmed)",
            self.epoch, self.len, self.confirmed
        )
    }
}

/// Appends one line to a log shared by every driver run, and flushes it to the volume.
fn record(name: &str, line: &str) {
    std::fs::create_dir_all(STATE).expect("state folder");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{STATE}/{name}"))
        .expect("open log");
    // One write() per line: parallel drivers append to the same file.
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write log");
    f.sync_data().expect("flush log");
}

fn recorded(name: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(format!("{STATE}/{name}")).unwrap_or_default();
    text.lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .collect()
}

fn other(node: &'static str) -> &'static str {
    if node == NODES[0] {
        NODES[1]
    } else {
        NODES[0]
    }
}

/// Writes a fresh value through whichever node accepts it; true if acknowledged.
fn write_one(cluster: &mut Cluster, guess: &mut &'static str) -> bool {
    let value = format!("v{:016x}", random());
    record("attempted", &value);
    for _ in 0..NODES.len() {
        let node = *guess;
        match cluster.call(node, &format!("WRITE {value}")) {
            Ok(reply) if reply.starts_with("OK ") => {
                let w: Vec<&str> = reply.split_whitespace().collect();
                let (index, epoch) = (w.get(1).unwrap_or(&"?"), w.get(2).unwrap_or(&"?"));
                record(
                    "acked",
                    &format!("{value} {node} {epoch} {index} {}", uptime()),
                );
                assert_sometimes!(
                    true,
                    "a write is acknowledged",
                    &json!({ "node": node, "epoch": epoch })
                );
                return true;
            }
            // NOT_PRIMARY, UNAVAILABLE, or no answer: try the other node.
            _ => *guess = other(node),
        }
    }
    false
}

fn first() {
    let mut cluster = Cluster::default();
    let mut guess = NODES[0];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if write_one(&mut cluster, &mut guess) {
            assert_reachable!("the cluster acknowledges a write during setup");
            antithesis_sdk::lifecycle::setup_complete(&json!({ "primary": guess }));
            println!("{guess} acknowledged a write; setup complete");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("no node acknowledged a write within 60 s");
    std::process::exit(1);
}

/// Reads an entry from the node that says it is a replica.
fn read_replica(cluster: &mut Cluster, primary_guess: &'static str) {
    let node = other(primary_guess);
    let Some(status) = cluster.status(node) else {
        return;
    };
    if status.primary || status.len == 0 {
        return;
    }
    let i = random() as usize % status.len;
    if let Ok(reply) = cluster.call(node, &format!("GET {i}")) {
        assert_sometimes!(
            reply.starts_with("VALUE "),
            "a replica serves a read",
            &json!({ "node": node, "index": i, "reply": reply })
        );
    }
}

fn write() {
    let mut cluster = Cluster::default();
    let mut guess = NODES[(random() % 2) as usize];
    let (mut acked, mut failed) = (0, 0);
    let start = Instant::now();
    // Bounded in time too, so a burst against an unreachable cluster ends.
    for _ in 0..25 {
        if start.elapsed() > Duration::from_secs(12) {
            break;
        }
        if random().is_multiple_of(8) {
            read_replica(&mut cluster, guess);
        } else if write_one(&mut cluster, &mut guess) {
            acked += 1;
        } else {
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(50 + random() % 400));
    }
    println!("burst: {acked} writes acknowledged, {failed} not");
}

/// Waits until one node leads and the other holds exactly its log, both agreed for a
/// few polls in a row. Returns the last statuses and whether they converged.
fn converge(cluster: &mut Cluster) -> (Vec<Option<Status>>, bool) {
    let start = Instant::now();
    let mut agreed = 0;
    let mut last = Vec::new();
    while start.elapsed() < Duration::from_secs(40) {
        last = NODES.iter().map(|n| cluster.status(n)).collect();
        let ok = match (&last[0], &last[1]) {
            (Some(a), Some(b)) => {
                a.primary != b.primary
                    && a.epoch == b.epoch
                    && a.len == b.len
                    && a.confirmed == a.len
                    && b.confirmed == b.len
            }
            _ => false,
        };
        agreed = if ok { agreed + 1 } else { 0 };
        if agreed == 4 {
            return (last, true);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    (last, false)
}

fn check() {
    let mut cluster = Cluster::default();
    let (statuses, converged) = converge(&mut cluster);
    let described: BTreeMap<&str, String> = NODES
        .iter()
        .zip(&statuses)
        .map(|(n, s)| {
            (
                *n,
                s.as_ref().map_or("unreachable".into(), Status::describe),
            )
        })
        .collect();
    println!("final state: {described:?}");
    // Read the primary's log (or, if no node leads, the longest one).
    let mut logs: BTreeMap<&str, (u64, Vec<String>)> = BTreeMap::new();
    for node in NODES {
        if let Ok(log) = cluster.read_log(node) {
            logs.insert(node, log);
        }
    }
    let leader = NODES
        .iter()
        .zip(&statuses)
        .find(|(n, s)| s.as_ref().is_some_and(|s| s.primary) && logs.contains_key(*n))
        .map(|(n, _)| *n)
        .or_else(|| {
            logs.iter()
                .max_by_key(|(_, (_, l))| l.len())
                .map(|(n, _)| *n)
        });
    let Some(leader) = leader else {
        eprintln!("no node answered READ: {described:?}");
        std::process::exit(1);
    };
    let final_log = &logs[leader].1;
    let same = logs.len() == 2 && logs[NODES[0]].1 == logs[NODES[1]].1;
    assert_always!(
        converged && same,
        "after healing, one node leads and the other holds its log",
        &json!({ "converged": converged, "same_log": same, "nodes": described })
    );

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in final_log {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    let repeated: Vec<&str> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(v, _)| *v)
        .collect();
    assert_always!(
        repeated.is_empty(),
        "the final log holds each value once",
        &json!({ "repeated": repeated.iter().take(10).collect::<Vec<_>>(), "count": repeated.len() })
    );

    // A kill of the driver's VM may cut the last line short: judge complete lines only.
    let acked: Vec<Vec<String>> = recorded("acked")
        .into_iter()
        .filter(|w| w.len() == 5 && w[0].len() == 17)
        .collect();
    let lost: Vec<&Vec<String>> = acked
        .iter()
        .filter(|w| !counts.contains_key(w[0].as_str()))
        .collect();
    for w in lost.iter().take(20) {
        eprintln!(
            "LOST {}: acknowledged by {} in epoch {} as entry {} at driver uptime {}s; not in the final log of {leader}",
            w[0], w[1], w[2], w[3], w[4]
        );
    }
    let details: Vec<serde_json::Value> = lost
        .iter()
        .take(5)
        .map(|w| {
            json!({
                "value": w[0],
                "acknowledged_by": w[1],
                "epoch": w[2],
                "entry": w[3],
                "driver_uptime_s": w[4],
            })
        })
        .collect();
    assert_always!(
        lost.is_empty(),
        "every acknowledged write is in the final log",
        &json!({
            "lost": lost.len(),
            "acknowledged": acked.len(),
            "first_lost": details,
            "final": { "node": leader, "epoch": logs[leader].0, "entries": final_log.len() },
        })
    );
    println!(
        "final log on {leader}: {} entries, epoch {}; {} attempted, {} acknowledged, {} lost",
        final_log.len(),
        logs[leader].0,
        recorded("attempted").len(),
        acked.len(),
        lost.len()
    );
}

fn main() {
    antithesis_init();
    match std::env::args().nth(1).as_deref() {
        Some("first") => first(),
        Some("write") => write(),
        Some("check") => check(),
        _ => {
            eprintln!("usage: replog-driver first|write|check");
            std::process::exit(2);
        }
    }
}

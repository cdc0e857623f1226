//! A replicated append-only log for detvm's `replog` example: two nodes, a primary and a
//! replica, asynchronous replication and automatic failover. One line per request over
//! TCP port 7300, clients and the peer alike:
//!
//! ```text
//! WRITE value          → OK index epoch | NOT_PRIMARY | UNAVAILABLE reason
//! GET index            → VALUE value | NONE
//! STATUS               → STATUS role epoch len confirmed synced
//! READ                 → LOG epoch n, then n lines
//! BATCH epoch from n   (n lines follow; from the primary to its replica)
//!                      → ACK epoch len | STALE epoch | GAP | TAIL n (n lines follow)
//! ```
//!
//! The primary appends a write and acknowledges it at once; every `BATCH_EVERY` it ships
//! what its replica has not confirmed (an empty batch is the heartbeat). It refuses writes
//! while its replica has been silent for `LEASE`. A replica that hears no batch for
//! `FAILOVER_AFTER` promotes itself with a higher epoch; an old primary that meets a
//! higher epoch steps down and hands the new primary the entries it acknowledged that no
//! replica confirmed (`TAIL`), so a partition or a pause loses nothing. The log lives in
//! memory: a killed node boots again empty and rejoins as a replica.
//!
//! The planted bug (examples/replog/README.md): a write is acknowledged before any other
//! node holds it. If the primary dies inside the short window between acknowledging a
//! write and shipping it, the write is gone: the replica takes over without it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use antithesis_sdk::{antithesis_init, assert_unreachable};
use serde_json::json;

const PORT: u16 = 7300;
/// The primary ships new entries (or a heartbeat) this often: group replication, fewer
/// and larger messages. Writes acknowledged since the last batch live only in its memory.
const BATCH_EVERY: Duration = Duration::from_millis(50);
/// The primary refuses writes once its replica has acknowledged nothing for this long.
const LEASE: Duration = Duration::from_millis(300);
/// A replica that hears no batch for this long promotes itself (longer than `LEASE`, so
/// an old primary has stopped acknowledging writes by then).
const FAILOVER_AFTER: Duration = Duration::from_secs(1);
/// How long the primary waits to connect to its replica, and for a reply.
const PEER_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Replica,
}

struct Node {
    name: String,
    peer: String,
    /// The node that leads when the cluster starts (it never had a primary).
    initial_primary: bool,
    role: Role,
    epoch: u64,
    log: Vec<String>,
    /// Index of each value in `log`: a repeated write is acknowledged, not appended.
    index: BTreeMap<String, usize>,
    /// How much of `log` another node is known to hold. On a primary, what its replica
    /// acknowledged; entries after it, acknowledged as a primary and never confirmed, are
    /// the tail a demoted primary hands over.
    confirmed: usize,
    /// This process led or was synced by a primary: it holds the cluster's data, so it
    /// may take over. A node that boots again (empty) never promotes itself.
    synced: bool,
    /// Replica: when the current primary last sent a batch.
    last_batch: Instant,
    /// Primary: when the replica last acknowledged a batch.
    last_ack: Option<Instant>,
}

type Shared = Arc<Mutex<Node>>;

fn lock(node: &Shared) -> MutexGuard<'_, Node> {
    node.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    fn append(&mut self, value: String) {
        self.index.insert(value.clone(), self.log.len());
        self.log.push(value);
    }

    fn replace_log(&mut self, log: Vec<String>) {
        self.log.clear();
        self.index.clear();
        for v in log {
            self.append(v);
        }
    }

    fn write(&mut self, value: &str) -> String {
        if self.role != Role::Primary {
            return "NOT_PRIMARY".into();
        }
        if let Some(i) = self.index.get(value) {
            return format!("OK {i} {}", self.epoch);
        }
        match self.last_ack {
            Some(t) if t.elapsed() <= LEASE => {}
            Some(t) => {
                return format!("UNAVAILABLE replica silent for {:?}", t.elapsed());
            }
            None => return "UNAVAILABLE no replica yet".into(),
        }
        // BUG (planted, the example's point): acknowledged before any other node has it.
        self.append(value.to_string());
        format!("OK {} {}", self.log.len() - 1, self.epoch)
    }

    /// A batch from a primary of epoch `epoch`: the reply to send back.
    fn batch(&mut self, epoch: u64, from: usize, values: Vec<String>) -> String {
        if epoch < self.epoch || (epoch == self.epoch && self.role == Role::Primary) {
            if epoch == self.epoch {
                assert_unreachable!(
                    "two primaries share an epoch",
                    &json!({ "node": self.name, "epoch": epoch })
                );
                println!("{}: ERROR another primary of my epoch {epoch}", self.name);
            }
            return format!("STALE {}", self.epoch);
        }
        if self.role == Role::Primary {
            println!(
                "{}: epoch {epoch} is newer than mine ({}): stepping down to replica",
                self.name, self.epoch
            );
            self.role = Role::Replica;
        }
        self.epoch = epoch;
        self.last_batch = Instant::now();
        let tail = &self.log[self.confirmed.min(self.log.len())..];
        if !tail.is_empty() {
            if from != 0 {
                return "GAP".into();
            }
            let shipped: std::collections::BTreeSet<&String> = values.iter().collect();
            let missing: Vec<&String> = tail.iter().filter(|v| !shipped.contains(v)).collect();
            if !missing.is_empty() {
                println!(
                    "{}: handing {} acknowledged, unconfirmed entries to the primary of epoch {epoch}",
                    self.name,
                    missing.len()
                );
                let mut reply = format!("TAIL {}", missing.len());
                for v in missing {
                    reply.push('\n');
                    reply.push_str(v);
                }
                return reply;
            }
        }
        if from > self.log.len() {
            return "GAP".into();
        }
        if from == 0 && (!self.synced || !tail.is_empty()) {
            println!(
                "{}: synced from the primary of epoch {epoch}: {} entries",
                self.name,
                values.len()
            );
        }
        let mut log = std::mem::take(&mut self.log);
        log.truncate(from);
        log.extend(values);
        self.replace_log(log);
        self.confirmed = self.log.len();
        self.synced = true;
        format!("ACK {epoch} {}", self.log.len())
    }
}

/// Writes a whole reply at once (one segment, no Nagle delay in between).
fn send(stream: &mut TcpStream, text: &str) -> std::io::Result<()> {
    stream.write_all(format!("{text}\n").as_bytes())
}

fn read_lines(reader: &mut impl BufRead, n: usize) -> std::io::Result<Vec<String>> {
    (0..n).map(|_| read_line(reader)).collect()
}

fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end().to_string())
}

fn serve(stream: TcpStream, node: &Shared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let line = read_line(&mut reader)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["WRITE", value] => lock(node).write(value),
            ["GET", i] => {
                let n = lock(node);
                match i.parse::<usize>().ok().and_then(|i| n.log.get(i)) {
                    Some(v) => format!("VALUE {v}"),
                    None => "NONE".into(),
                }
            }
            ["STATUS"] => {
                let n = lock(node);
                let role = if n.role == Role::Primary {
                    "primary"
                } else {
                    "replica"
                };
                format!(
                    "STATUS {role} {} {} {} {}",
                    n.epoch,
                    n.log.len(),
                    n.confirmed,
                    n.synced
                )
            }
            ["READ"] => {
                let n = lock(node);
                let mut reply = format!("LOG {} {}", n.epoch, n.log.len());
                for v in &n.log {
                    reply.push('\n');
                    reply.push_str(v);
                }
                reply
            }
            ["BATCH", epoch, from, count] => {
                let (Ok(epoch), Ok(from), Ok(count)) = (epoch.parse(), from.parse(), count.parse())
                else {
                    send(&mut out, "ERROR bad batch header")?;
                    return Ok(());
                };
                let values = read_lines(&mut reader, count)?;
                lock(node).batch(epoch, from, values)
            }
            _ => format!("ERROR cannot parse `{line}`"),
        };
        send(&mut out, &reply)?;
    }
}

fn peer_addr(peer: &str) -> Option<SocketAddr> {
    (peer, PORT).to_socket_addrs().ok()?.next()
}

/// One connection from a primary to its replica.
struct Link {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The next batch starts from entry 0 (a new connection, or after `GAP`/`TAIL`).
    full: bool,
}

impl Link {
    fn open(peer: &str) -> std::io::Result<Link> {
        let addr = peer_addr(peer).ok_or(std::io::ErrorKind::NotFound)?;
        let stream = TcpStream::connect_timeout(&addr, PEER_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(PEER_TIMEOUT))?;
        Ok(Link {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            full: true,
        })
    }
}

/// The primary's side of replication: a batch every `BATCH_EVERY`, one reply each.
fn replicate(node: &Shared) {
    let peer = lock(node).peer.clone();
    let mut link: Option<Link> = None;
    let mut connected = false;
    loop {
        std::thread::sleep(BATCH_EVERY);
        let (epoch, from, values) = {
            let n = lock(node);
            if n.role != Role::Primary {
                link = None;
                continue;
            }
            let full = link.as_ref().is_none_or(|l| l.full);
            let from = if full {
                0
            } else {
                n.confirmed.min(n.log.len())
            };
            (n.epoch, from, n.log[from..].to_vec())
        };
        if link.is_none() {
            link = Link::open(&peer).ok();
        }
        let Some(l) = link.as_mut() else { continue };
        let mut msg = format!("BATCH {epoch} {from} {}", values.len());
        for v in &values {
            msg.push('\n');
            msg.push_str(v);
        }
        let reply = send(&mut l.writer, &msg).and_then(|()| read_line(&mut l.reader));
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                if connected {
                    let why = match e.kind() {
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                            format!("no reply within {PEER_TIMEOUT:?}")
                        }
                        _ => e.to_string(),
                    };
                    println!("{}: lost the replica {peer}: {why}", lock(node).name);
                    connected = false;
                }
                link = None;
                continue;
            }
        };
        let words: Vec<&str> = reply.split_whitespace().collect();
        let mut n = lock(node);
        match words.as_slice() {
            ["ACK", e, len] if e.parse::<u64>() == Ok(n.epoch) && n.role == Role::Primary => {
                if !connected {
                    println!("{}: replica {peer} in sync ({len} entries)", n.name);
                    connected = true;
                }
                let len: usize = len.parse().unwrap_or(0);
                n.confirmed = len.min(n.log.len());
                n.last_ack = Some(Instant::now());
                l.full = false;
            }
            ["STALE", e] => {
                let e: u64 = e.parse().unwrap_or(0);
                if e > n.epoch && n.role == Role::Primary {
                    println!(
                        "{}: {peer} leads epoch {e}, newer than mine ({}): stepping down to replica",
                        n.name, n.epoch
                    );
                    n.role = Role::Replica;
                    n.epoch = e;
                    n.last_batch = Instant::now();
                }
                link = None;
            }
            ["TAIL", count] => {
                let count: usize = count.parse().unwrap_or(0);
                drop(n);
                let Ok(values) = read_lines(&mut l.reader, count) else {
                    link = None;
                    continue;
                };
                let mut n = lock(node);
                let mut adopted = 0;
                for v in values {
                    if !n.index.contains_key(&v) {
                        n.append(v);
                        adopted += 1;
                    }
                }
                println!("{}: adopted {adopted} entries from {peer}", n.name);
                l.full = true;
            }
            _ => l.full = true,
        }
    }
}

/// A replica that hears no batch for `FAILOVER_AFTER` takes over.
fn watch_primary(node: &Shared) {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut n = lock(node);
        let silent = n.last_batch.elapsed();
        if n.role == Role::Replica && n.synced && n.epoch >= 1 && silent > FAILOVER_AFTER {
            n.epoch += 1;
            n.role = Role::Primary;
            n.confirmed = n.log.len();
            n.last_ack = None;
            println!(
                "{}: no batch from the primary for {silent:?}: promoted to primary of epoch {} with {} entries",
                n.name,
                n.epoch,
                n.log.len()
            );
        }
    }
}

/// The initial primary leads once its peer is up and has never had a primary; after a
/// restart the peer has (it answers with an epoch), and this node waits to be synced.
fn bootstrap(node: &Shared) {
    let (name, peer, initial) = {
        let n = lock(node);
        (n.name.clone(), n.peer.clone(), n.initial_primary)
    };
    if !initial {
        return;
    }
    loop {
        let status = peer_addr(&peer)
            .and_then(|a| TcpStream::connect_timeout(&a, PEER_TIMEOUT).ok())
            .and_then(|s| {
                s.set_read_timeout(Some(PEER_TIMEOUT)).ok()?;
                let mut w = s.try_clone().ok()?;
                send(&mut w, "STATUS").ok()?;
                read_line(&mut BufReader::new(s)).ok()
            });
        let mut n = lock(node);
        if n.synced || n.epoch > 0 {
            return;
        }
        let words: Vec<&str> = status.as_deref().unwrap_or("").split_whitespace().collect();
        if let ["STATUS", _, "0", _, _, "false"] = words.as_slice() {
            n.role = Role::Primary;
            n.epoch = 1;
            n.synced = true;
            println!("{name}: {peer} never had a primary: leading epoch 1");
            return;
        }
        drop(n);
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn main() {
    antithesis_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let (Some(name), Some(peer)) = (flag("--name"), flag("--peer")) else {
        eprintln!("usage: replog-server --name NAME --peer PEER [--initial-role primary|replica]");
        std::process::exit(2);
    };
    let initial_primary = flag("--initial-role").as_deref() == Some("primary");
    let listener = TcpListener::bind(("0.0.0.0", PORT)).unwrap_or_else(|e| {
        eprintln!("replog-server: cannot listen on port {PORT}: {e}");
        std::process::exit(1);
    });
    println!("{name}: listening on port {PORT}, peer {peer}, empty log, replica until synced");
    let node: Shared = Arc::new(Mutex::new(Node {
        name,
        peer,
        initial_primary,
        role: Role::Replica,
        epoch: 0,
        log: Vec::new(),
        index: BTreeMap::new(),
        confirmed: 0,
        synced: false,
        last_batch: Instant::now(),
        last_ack: None,
    }));
    for task in [replicate, watch_primary, bootstrap] {
        let node = Arc::clone(&node);
        std::thread::spawn(move || task(&node));
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let node = Arc::clone(&node);
        std::thread::spawn(move || serve(stream, &node));
    }
}

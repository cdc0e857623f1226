//! A tiny key-value server for detvm's `kv` example: one line per request over TCP.
//!
//! `SET key value` → `OK`; `GET key` → `VALUE value` or `MISSING`. With
//! `KV_BUG=drop-writes` every fifth SET is acknowledged but not stored: the bug the
//! example's properties catch on purpose.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Store {
    values: BTreeMap<String, String>,
    sets: u64,
}

fn main() {
    let addr = std::env::var("KV_LISTEN").unwrap_or_else(|_| "0.0.0.0:7000".into());
    let drop_writes = std::env::var("KV_BUG").is_ok_and(|v| v == "drop-writes");
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("kv-server: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    println!("kv-server listening on {addr} (drop-writes bug: {drop_writes})");
    let store = Arc::new(Mutex::new(Store::default()));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let store = Arc::clone(&store);
        std::thread::spawn(move || serve(stream, &store, drop_writes));
    }
}

fn serve(stream: TcpStream, store: &Mutex<Store>, drop_writes: bool) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let mut words = line.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(key), Some(value)) => {
                let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                s.sets += 1;
                if !(drop_writes && s.sets.is_multiple_of(5)) {
                    s.values.insert(key.to_string(), value.to_string());
                }
                "OK".to_string()
            }
            (Some("GET"), Some(key), None) => {
                let s = store.lock().unwrap_or_else(|e| e.into_inner());
                match s.values.get(key) {
                    Some(v) => format!("VALUE {v}"),
                    None => "MISSING".to_string(),
                }
            }
            _ => format!("ERROR cannot parse `{line}`"),
        };
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

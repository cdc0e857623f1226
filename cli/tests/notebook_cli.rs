//! `detvm notebook`: it refuses an address other than loopback without a token, and
//! serves the run store's pages on the address it prints.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::cli::detvm;

#[test]
fn refuses_other_addresses_without_a_token() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(detvm())
        .args(["notebook", "--listen", "0.0.0.0:7878"])
        .env("DETVM_HOME", home.path())
        .env_remove("DETVM_NOTEBOOK_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --token"));
}

#[test]
fn serves_the_runs_page_on_the_printed_address() {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(detvm())
        .args(["notebook", "--listen", "127.0.0.1:0"])
        .env("DETVM_HOME", home.path())
        .env_remove("DETVM_NOTEBOOK_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /api/runs HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.ends_with("[]"),
        "an empty run store lists no runs: {reply}"
    );
}

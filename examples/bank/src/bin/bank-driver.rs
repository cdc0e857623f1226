//! The test driver of detvm's `bank` example, run by the test composer through the
//! scripts in `/opt/antithesis/test/v1/main/`. It reports with the Antithesis SDK.
//!
//! - `first`: wait for the server, then declare setup complete.
//! - `transact`: a burst of creations, voids and re-reads of voided transactions.
//!   Acknowledged creations and voids are logged in files shared by every driver run.
//! - `check`: the final listing holds every acknowledged transaction, every
//!   acknowledged void, in time order, and balances add up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use antithesis_sdk::{antithesis_init, assert_always, assert_reachable, assert_sometimes};
use serde_json::json;

const SERVER: &str = "bank:7100";
const STATE: &str = "/var/lib/bank-driver";
const ACCOUNTS: u32 = 4;

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

    fn connect_or_exit() -> Client {
        Client::connect().unwrap_or_else(|e| {
            eprintln!("cannot connect to {SERVER}: {e}");
            std::process::exit(1);
        })
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_string())
    }

    fn call(&mut self, request: &str) -> std::io::Result<String> {
        writeln!(self.writer, "{request}")?;
        self.read_line()
    }

    fn list(&mut self) -> std::io::Result<Vec<Tx>> {
        writeln!(self.writer, "LIST")?;
        let mut txs = Vec::new();
        loop {
            let line = self.read_line()?;
            if line == "END" {
                return Ok(txs);
            }
            txs.extend(Tx::parse(&line));
        }
    }
}

/// A `TX id account amount status stamp` reply.
#[derive(Debug, Clone)]
struct Tx {
    id: u64,
    account: u32,
    amount: i64,
    voided: bool,
    stamp: i64,
}

impl Tx {
    fn parse(line: &str) -> Option<Tx> {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["TX", id, account, amount, status, stamp] => Some(Tx {
                id: id.parse().ok()?,
                account: account.parse().ok()?,
                amount: amount.parse().ok()?,
                voided: *status == "voided",
                stamp: stamp.parse().ok()?,
            }),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        let status = if self.voided { "voided" } else { "active" };
        format!("tx {} ({status}, stamp {})", self.id, self.stamp)
    }
}

fn random() -> u64 {
    antithesis_sdk::random::get_random()
}

/// Appends one line to a log shared by every driver run (O_APPEND, one write per line).
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

/// The first number of each complete line of a log.
fn logged_ids(name: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(format!("{STATE}/{name}")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn pick(ids: &[u64]) -> Option<u64> {
    (!ids.is_empty()).then(|| ids[random() as usize % ids.len()])
}

fn first() {
    for _ in 0..300 {
        if Client::connect().is_ok() {
            assert_reachable!("the bank accepts connections during setup");
            antithesis_sdk::lifecycle::setup_complete(&json!({ "server": SERVER }));
            println!("bank reachable; setup complete");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("bank never became reachable");
    std::process::exit(1);
}

/// Sends one request; on a broken connection ends this burst (nothing to judge).
fn call(client: &mut Client, request: &str) -> String {
    client.call(request).unwrap_or_else(|e| {
        eprintln!("{request}: {e}; ending this burst");
        std::process::exit(0);
    })
}

/// Reads a voided transaction back: it must still be voided.
fn recheck(client: &mut Client, id: u64, why: &str) {
    let reply = call(client, &format!("GET {id}"));
    let tx = Tx::parse(&reply);
    assert_always!(
        tx.as_ref().is_some_and(|t| t.voided),
        "a voided transaction stays voided",
        &json!({ "id": id, "read": reply, "when": why })
    );
}

fn transact() {
    let mut client = Client::connect_or_exit();
    for _ in 0..15 {
        let account = (random() % u64::from(ACCOUNTS)) as u32;
        match random() % 4 {
            0 | 1 => {
                // Mostly deposits; withdrawals may be refused.
                let amount = (random() % 200) as i64 - 60;
                let amount = if amount == 0 { 1 } else { amount };
                let reply = call(&mut client, &format!("CREATE {account} {amount}"));
                if let Some(id) = reply.strip_prefix("OK ") {
                    log("created", &format!("{id} {account} {amount}"));
                }
                assert_sometimes!(
                    reply.starts_with("REJECTED insufficient funds"),
                    "a withdrawal is refused for insufficient funds",
                    &json!({ "reply": reply })
                );
            }
            2 => {
                let voided: BTreeSet<u64> = logged_ids("voided").into_iter().collect();
                let candidates: Vec<u64> = logged_ids("created")
                    .into_iter()
                    .filter(|id| !voided.contains(id))
                    .collect();
                let Some(id) = pick(&candidates) else {
                    continue;
                };
                let reply = call(&mut client, &format!("VOID {id}"));
                assert_sometimes!(
                    reply == "OK",
                    "sometimes a void succeeds",
                    &json!({ "id": id, "reply": reply })
                );
                if reply == "OK" {
                    log("voided", &id.to_string());
                    recheck(&mut client, id, "right after the void");
                }
            }
            _ => {
                if let Some(id) = pick(&logged_ids("voided")) {
                    recheck(&mut client, id, "later");
                }
            }
        }
        let reply = call(&mut client, &format!("BALANCE {account}"));
        let balance: Option<i64> = reply.strip_prefix("BALANCE ").and_then(|b| b.parse().ok());
        assert_always!(
            balance.is_some_and(|b| b >= 0),
            "balances never go negative",
            &json!({ "account": account, "read": reply })
        );
        std::thread::sleep(Duration::from_millis(50 + random() % 250));
    }
}

fn check() {
    let mut client = Client::connect_or_exit();
    let txs = client.list().expect("the final listing");
    let listed: BTreeMap<u64, &Tx> = txs.iter().map(|t| (t.id, t)).collect();

    let missing: Vec<u64> = logged_ids("created")
        .into_iter()
        .filter(|id| !listed.contains_key(id))
        .collect();
    assert_always!(
        missing.is_empty(),
        "listing returns every acknowledged transaction",
        &json!({ "listed": txs.len(), "missing": missing })
    );

    let active_again: Vec<String> = logged_ids("voided")
        .into_iter()
        .filter(|id| listed.get(id).is_some_and(|t| !t.voided))
        .map(|id| listed[&id].describe())
        .collect();
    assert_always!(
        active_again.is_empty(),
        "a voided transaction stays voided",
        &json!({ "when": "final listing", "active_again": active_again })
    );

    // The listing is chronological: ids are handed out in creation order.
    let out_of_order: Vec<String> = txs
        .windows(2)
        .filter(|w| w[0].id > w[1].id)
        .take(5)
        .map(|w| format!("{} listed before {}", w[0].describe(), w[1].describe()))
        .collect();
    assert_always!(
        out_of_order.is_empty(),
        "the listing is in creation order",
        &json!({ "out_of_order": out_of_order })
    );

    let mut sums: BTreeMap<u32, i64> = BTreeMap::new();
    for t in txs.iter().filter(|t| !t.voided) {
        *sums.entry(t.account).or_default() += t.amount;
    }
    for account in 0..ACCOUNTS {
        let reply = client
            .call(&format!("BALANCE {account}"))
            .unwrap_or_default();
        let expected = sums.get(&account).copied().unwrap_or(0);
        assert_always!(
            reply == format!("BALANCE {expected}"),
            "each balance is the sum of its active transactions",
            &json!({ "account": account, "read": reply, "sum": expected })
        );
    }
    let voids = txs.iter().filter(|t| t.voided).count();
    println!(
        "checked {} transactions ({voids} voided), {} missing, {} voids undone",
        txs.len(),
        missing.len(),
        active_again.len()
    );
}

fn main() {
    antithesis_init();
    match std::env::args().nth(1).as_deref() {
        Some("first") => first(),
        Some("transact") => transact(),
        Some("check") => check(),
        _ => {
            eprintln!("usage: bank-driver first|transact|check");
            std::process::exit(2);
        }
    }
}

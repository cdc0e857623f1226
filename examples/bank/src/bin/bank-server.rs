//! A small bank for detvm's `bank` example: transactions on accounts over TCP, one line
//! per request, one thread per connection.
//!
//! ```text
//! CREATE account amount → OK id | REJECTED reason     (amount < 0 is a withdrawal)
//! VOID id               → OK | REJECTED reason
//! GET id                → TX id account amount active|voided stamp | MISSING
//! LIST                  → one TX line per transaction, in time order, then END
//! BALANCE account       → BALANCE n
//! ```
//!
//! The bank keeps a journal of entries (a creation or a void) in time order, and a
//! transaction's state is what replaying the journal gives. Entries use a packed record
//! with the time in 32-bit seconds, as many formats designed before 2038 do.
//!
//! The planted bug (examples/bank/README.md): the stamp is `i32`. Once the clock passes
//! 2038-01-19T03:14:07Z it wraps to about −2^31, so an entry written after the wrap
//! sorts *before* every entry written earlier. A void of a transaction created before
//! the wrap then replays before its creation, does nothing, and the voided transaction
//! is active again; the listing's time order breaks too. Before 2038 nothing shows.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
enum Change {
    Create { account: u32, amount: i64 },
    Void,
}

/// One journal record, as the packed on-disk format would hold it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Seconds since the Unix epoch, 32 bits.
    stamp: i32,
    /// Breaks ties between entries of the same second.
    seq: u64,
    tx: u64,
    change: Change,
}

#[derive(Debug, Clone)]
struct Tx {
    id: u64,
    account: u32,
    amount: i64,
    voided: bool,
    stamp: i32,
}

/// The journal replayed: transactions in journal order, and balances.
#[derive(Debug, Default, Clone)]
struct View {
    order: Vec<u64>,
    txs: BTreeMap<u64, Tx>,
    balances: BTreeMap<u32, i64>,
}

#[derive(Default)]
struct Bank {
    journal: Vec<Entry>,
    next_tx: u64,
    next_seq: u64,
    /// The replay of `journal`, dropped on every write.
    view: Option<View>,
}

/// The current time in the journal's 32-bit field.
fn stamp_now() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // BUG (planted, the example's point): truncates after 2038-01-19T03:14:07Z.
    secs as i32
}

impl Bank {
    fn append(&mut self, tx: u64, change: Change) {
        let entry = Entry {
            stamp: stamp_now(),
            seq: self.next_seq,
            tx,
            change,
        };
        self.next_seq += 1;
        // Keep the journal in time order, so replay and listings read chronologically.
        let key = (entry.stamp, entry.seq);
        let at = self.journal.partition_point(|e| (e.stamp, e.seq) <= key);
        self.journal.insert(at, entry);
        self.view = None;
    }

    fn view(&mut self) -> &View {
        let journal = &self.journal;
        self.view.get_or_insert_with(|| replay(journal))
    }

    fn create(&mut self, account: u32, amount: i64) -> String {
        if amount == 0 {
            return "REJECTED amount must not be zero".into();
        }
        let balance = self.view().balances.get(&account).copied().unwrap_or(0);
        if balance + amount < 0 {
            return format!("REJECTED insufficient funds (balance {balance})");
        }
        self.next_tx += 1;
        let id = self.next_tx;
        self.append(id, Change::Create { account, amount });
        format!("OK {id}")
    }

    fn void(&mut self, id: u64) -> String {
        let view = self.view();
        let Some(tx) = view.txs.get(&id) else {
            return "REJECTED no such transaction".into();
        };
        if tx.voided {
            return "REJECTED already voided".into();
        }
        let balance = view.balances.get(&tx.account).copied().unwrap_or(0);
        if balance - tx.amount < 0 {
            return format!("REJECTED voiding would overdraw (balance {balance})");
        }
        self.append(id, Change::Void);
        "OK".into()
    }
}

fn replay(journal: &[Entry]) -> View {
    let mut v = View::default();
    for e in journal {
        match e.change {
            Change::Create { account, amount } => {
                v.order.push(e.tx);
                v.txs.insert(
                    e.tx,
                    Tx {
                        id: e.tx,
                        account,
                        amount,
                        voided: false,
                        stamp: e.stamp,
                    },
                );
                *v.balances.entry(account).or_default() += amount;
            }
            Change::Void => {
                // A void of a transaction not yet created (in journal order) does nothing.
                if let Some(tx) = v.txs.get_mut(&e.tx) {
                    if !tx.voided {
                        tx.voided = true;
                        *v.balances.entry(tx.account).or_default() -= tx.amount;
                    }
                }
            }
        }
    }
    v
}

fn tx_line(tx: &Tx) -> String {
    let status = if tx.voided { "voided" } else { "active" };
    format!(
        "TX {} {} {} {status} {}",
        tx.id, tx.account, tx.amount, tx.stamp
    )
}

fn handle(bank: &Mutex<Bank>, line: &str) -> String {
    let mut bank = bank.lock().unwrap_or_else(|e| e.into_inner());
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["CREATE", account, amount] => match (account.parse(), amount.parse()) {
            (Ok(account), Ok(amount)) => bank.create(account, amount),
            _ => format!("ERROR cannot parse `{line}`"),
        },
        ["VOID", id] => match id.parse() {
            Ok(id) => bank.void(id),
            Err(_) => format!("ERROR cannot parse `{line}`"),
        },
        ["GET", id] => {
            let id: u64 = id.parse().unwrap_or(0);
            match bank.view().txs.get(&id) {
                Some(tx) => tx_line(tx),
                None => "MISSING".into(),
            }
        }
        ["LIST"] => {
            let view = bank.view();
            let mut out: Vec<String> = view.order.iter().map(|id| tx_line(&view.txs[id])).collect();
            out.push("END".into());
            out.join("\n")
        }
        ["BALANCE", account] => {
            let account: u32 = account.parse().unwrap_or(u32::MAX);
            let balance = bank.view().balances.get(&account).copied().unwrap_or(0);
            format!("BALANCE {balance}")
        }
        _ => format!("ERROR cannot parse `{line}`"),
    }
}

fn serve(stream: TcpStream, bank: &Mutex<Bank>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if writeln!(out, "{}", handle(bank, &line)).is_err() {
            return;
        }
    }
}

fn main() {
    let addr = std::env::var("BANK_LISTEN").unwrap_or_else(|_| "0.0.0.0:7100".into());
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("bank-server: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    println!(
        "bank-server listening on {addr}; clock stamp {}",
        stamp_now()
    );
    let bank = Arc::new(Mutex::new(Bank::default()));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let bank = Arc::clone(&bank);
        std::thread::spawn(move || serve(stream, &bank));
    }
}

//! The work queue of campaigns spread over hosts, in PostgreSQL (docs/scale-out.md).
//!
//! An item is a branch to run (campaign, timeline, and its `WorkItem` as JSON). A worker
//! takes one with a lease (`FOR UPDATE SKIP LOCKED`: two workers never take the same
//! item while its lease lasts); a worker killed mid-item simply never commits, its lease
//! expires and another worker takes the item again (determinism makes the redo give the
//! same result). Completing an item commits its result, the new items it brings and the
//! item's removal in one transaction; results and items are keyed by (campaign,
//! timeline), so a duplicate result or item changes nothing.

use std::time::Duration;

use postgres::{Client, NoTls};
use serde_json::Value;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS detvm_items (
    campaign TEXT NOT NULL,
    timeline BIGINT NOT NULL,
    body JSONB NOT NULL,
    leased_until TIMESTAMPTZ,
    leases INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    PRIMARY KEY (campaign, timeline)
);
CREATE INDEX IF NOT EXISTS detvm_items_lease ON detvm_items (leased_until);
CREATE TABLE IF NOT EXISTS detvm_results (
    campaign TEXT NOT NULL,
    timeline BIGINT NOT NULL,
    body JSONB NOT NULL,
    worker TEXT NOT NULL,
    done_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, timeline)
);
";

#[derive(Debug, thiserror::Error)]
#[error("work queue: {0}")]
pub struct QueueError(String);

impl From<postgres::Error> for QueueError {
    fn from(e: postgres::Error) -> Self {
        QueueError(e.to_string())
    }
}

/// One item to run, or one taken with a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub campaign: String,
    pub timeline: i64,
    pub body: Value,
}

/// An item this worker holds until `lease` ends; `leases` counts how often it was taken.
#[derive(Debug, Clone)]
pub struct Leased {
    pub item: Item,
    pub leases: i32,
}

pub struct Queue {
    client: Client,
    worker: String,
}

impl Queue {
    /// Connects (`postgres://user@host:port/db`) as `worker` and creates the tables.
    pub fn connect(url: &str, worker: &str) -> Result<Queue, QueueError> {
        let mut client = Client::connect(url, NoTls)?;
        // Two first connections may race to create the tables: one lock orders them.
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(417219)", &[])?;
        tx.batch_execute(SCHEMA)?;
        tx.commit()?;
        Ok(Queue {
            client,
            worker: worker.to_string(),
        })
    }

    /// Adds items; one already queued or already done is left as it is.
    pub fn enqueue(&mut self, items: &[Item]) -> Result<(), QueueError> {
        let mut tx = self.client.transaction()?;
        insert_items(&mut tx, items)?;
        tx.commit()?;
        Ok(())
    }

    /// Takes the first free item (never leased, or its lease over) for `lease`.
    pub fn take(&mut self, lease: Duration) -> Result<Option<Leased>, QueueError> {
        let secs = lease.as_secs_f64();
        let row = self.client.query_opt(
            "UPDATE detvm_items SET leased_until = now() + make_interval(secs => $1),
                    leases = leases + 1, worker = $2
             WHERE (campaign, timeline) = (
                 SELECT campaign, timeline FROM detvm_items
                 WHERE leased_until IS NULL OR leased_until < now()
                 ORDER BY campaign, timeline
                 FOR UPDATE SKIP LOCKED LIMIT 1)
             RETURNING campaign, timeline, body, leases",
            &[&secs, &self.worker],
        )?;
        Ok(row.map(|r| Leased {
            item: Item {
                campaign: r.get(0),
                timeline: r.get(1),
                body: r.get(2),
            },
            leases: r.get(3),
        }))
    }

    /// Commits an item's result with the items it brings, and removes the item, in one
    /// transaction. A result already there (a redo after a lost lease) is kept as it is.
    pub fn complete(
        &mut self,
        done: &Leased,
        result: &Value,
        new_items: &[Item],
    ) -> Result<bool, QueueError> {
        let mut tx = self.client.transaction()?;
        let added = tx.execute(
            "INSERT INTO detvm_results (campaign, timeline, body, worker) VALUES ($1, $2, $3, $4)
             ON CONFLICT (campaign, timeline) DO NOTHING",
            &[
                &done.item.campaign,
                &done.item.timeline,
                result,
                &self.worker,
            ],
        )?;
        insert_items(&mut tx, new_items)?;
        tx.execute(
            "DELETE FROM detvm_items WHERE campaign = $1 AND timeline = $2",
            &[&done.item.campaign, &done.item.timeline],
        )?;
        tx.commit()?;
        Ok(added == 1)
    }

    /// Every result of a campaign, by timeline.
    pub fn results(&mut self, campaign: &str) -> Result<Vec<(i64, Value, String)>, QueueError> {
        let rows = self.client.query(
            "SELECT timeline, body, worker FROM detvm_results WHERE campaign = $1 ORDER BY timeline",
            &[&campaign],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Items of a campaign not done yet (queued or leased).
    pub fn pending(&mut self, campaign: &str) -> Result<i64, QueueError> {
        let row = self.client.query_one(
            "SELECT count(*) FROM detvm_items WHERE campaign = $1",
            &[&campaign],
        )?;
        Ok(row.get(0))
    }
}

/// Inserts items not already queued and not already done.
fn insert_items(tx: &mut postgres::Transaction, items: &[Item]) -> Result<(), QueueError> {
    let insert = tx.prepare(
        "INSERT INTO detvm_items (campaign, timeline, body)
         SELECT $1, $2, $3
         WHERE NOT EXISTS (SELECT 1 FROM detvm_results WHERE campaign = $1 AND timeline = $2)
         ON CONFLICT (campaign, timeline) DO NOTHING",
    )?;
    for i in items {
        tx.execute(&insert, &[&i.campaign, &i.timeline, &i.body])?;
    }
    Ok(())
}

impl QueueError {
    pub fn from_message(message: &str) -> QueueError {
        QueueError(message.to_string())
    }
}

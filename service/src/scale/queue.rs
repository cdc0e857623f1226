//! The work queue of campaigns spread over hosts: a pgmq queue in PostgreSQL
//! (docs/scale-out.md says why pgmq). pgmq is installed as plain SQL by the crate
//! (no server extension needed) the first time anyone connects.
//!
//! An item is a branch to run (campaign, timeline, and its `WorkItem` as JSON), one pgmq
//! message. A worker reads it with a visibility timeout: its lease. While it runs the
//! item it renews the lease ([`Queue::keep_alive`]), so a slow item is never handed to
//! a second worker while its first one lives; a worker killed mid-item stops renewing,
//! the timeout passes and another worker reads the item again (`read_ct` counts the
//! tries; determinism makes a redo give the same result).
//!
//! Completing an item commits its result, the items it brings and the message's
//! deletion in one transaction (pgmq's `*_with_cxn` calls run on our transaction).
//! Results and items are keyed by (campaign, timeline) in our own tables, so a late
//! duplicate result or a second enqueue of an item changes nothing.

use std::time::Duration;

use pgmq::{Message, PGMQueueExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

/// The pgmq queue every campaign's items go through.
pub const QUEUE: &str = "detvm_items";

/// Our keyed tables next to pgmq's: one row per item ever queued (and who read it
/// last), one per result.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS detvm_item_keys (
    campaign TEXT NOT NULL,
    timeline BIGINT NOT NULL,
    msg_id BIGINT,
    worker TEXT,
    PRIMARY KEY (campaign, timeline)
);
CREATE TABLE IF NOT EXISTS detvm_results (
    campaign TEXT NOT NULL,
    timeline BIGINT NOT NULL,
    body JSONB NOT NULL,
    worker TEXT NOT NULL,
    reads INTEGER NOT NULL,
    done_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, timeline)
);
";

/// Orders the first connections' installs (pgmq's SQL, the queue, our tables).
const SETUP_LOCK: i64 = 417_219;

#[derive(Debug, thiserror::Error)]
#[error("work queue: {0}")]
pub struct QueueError(String);

impl From<sqlx::Error> for QueueError {
    fn from(e: sqlx::Error) -> Self {
        QueueError(e.to_string())
    }
}

impl From<pgmq::PgmqError> for QueueError {
    fn from(e: pgmq::PgmqError) -> Self {
        QueueError(e.to_string())
    }
}

impl QueueError {
    pub fn from_message(message: &str) -> QueueError {
        QueueError(message.to_string())
    }
}

/// One item to run, or one taken with a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub campaign: String,
    pub timeline: i64,
    pub body: Value,
}

/// An item this worker holds for a lease; `leases` counts how often it was read
/// (pgmq's `read_ct`), this time included.
#[derive(Debug, Clone)]
pub struct Leased {
    pub item: Item,
    pub leases: i32,
    pub msg_id: i64,
}

/// pgmq's visibility timeouts are whole seconds: a lease is at least one.
fn lease_secs(lease: Duration) -> i32 {
    lease.as_secs_f64().ceil().clamp(1.0, i32::MAX as f64) as i32
}

pub struct Queue {
    pool: PgPool,
    pgmq: PGMQueueExt,
    worker: String,
    /// Runs the async clients for this blocking API; its one thread also runs the
    /// lease renewals while the caller's thread runs an item.
    runtime: tokio::runtime::Runtime,
}

impl Queue {
    /// Connects (`postgres://user@host:port/db`) as `worker`; installs pgmq, its queue
    /// and our tables when missing.
    pub fn connect(url: &str, worker: &str) -> Result<Queue, QueueError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| QueueError(e.to_string()))?;
        let pool = runtime.block_on(PgPoolOptions::new().max_connections(3).connect(url))?;
        let pgmq = runtime.block_on(PGMQueueExt::new_with_pool(pool.clone()));
        let queue = Queue {
            pool,
            pgmq,
            worker: worker.to_string(),
            runtime,
        };
        queue.runtime.block_on(queue.install())?;
        Ok(queue)
    }

    async fn install(&self) -> Result<(), QueueError> {
        let mut lock = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SETUP_LOCK)
            .execute(&mut *lock)
            .await?;
        let installed = async {
            self.pgmq.install_sql_from_embedded().await?;
            self.pgmq.create(QUEUE).await?;
            sqlx::raw_sql(SCHEMA).execute(&self.pool).await?;
            Ok::<(), QueueError>(())
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SETUP_LOCK)
            .execute(&mut *lock)
            .await?;
        installed
    }

    /// Adds items; one already queued or already done is left as it is.
    pub fn enqueue(&self, items: &[Item]) -> Result<(), QueueError> {
        self.runtime.block_on(async {
            let mut tx = self.pool.begin().await?;
            self.send_new(&mut tx, items).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Sends, within `tx`, the items whose key is new.
    async fn send_new(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        items: &[Item],
    ) -> Result<(), QueueError> {
        let mut fresh = Vec::new();
        for i in items {
            let added = sqlx::query(
                "INSERT INTO detvm_item_keys (campaign, timeline) VALUES ($1, $2)
                 ON CONFLICT (campaign, timeline) DO NOTHING",
            )
            .bind(&i.campaign)
            .bind(i.timeline)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if added == 1 {
                fresh.push(i);
            }
        }
        if !fresh.is_empty() {
            self.pgmq
                .send_batch_with_cxn(QUEUE, &fresh, &mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Takes the first visible item for `lease` (none: every item is leased or done).
    pub fn take(&self, lease: Duration) -> Result<Option<Leased>, QueueError> {
        self.runtime.block_on(async {
            let mut tx = self.pool.begin().await?;
            let read: Option<Message<Item>> = self
                .pgmq
                .read_with_cxn(QUEUE, lease_secs(lease), &mut *tx)
                .await?;
            let Some(m) = read else {
                return Ok(None);
            };
            sqlx::query(
                "UPDATE detvm_item_keys SET msg_id = $3, worker = $4
                 WHERE campaign = $1 AND timeline = $2",
            )
            .bind(&m.message.campaign)
            .bind(m.message.timeline)
            .bind(m.msg_id)
            .bind(&self.worker)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(Leased {
                item: m.message,
                leases: m.read_ct,
                msg_id: m.msg_id,
            }))
        })
    }

    /// Renews a lease for another `lease` from now; false when the item is gone (done)
    /// or was read again by another worker after this lease lapsed.
    pub fn renew(&self, held: &Leased, lease: Duration) -> Result<bool, QueueError> {
        self.runtime.block_on(renew(&self.pgmq, held, lease))
    }

    /// Renews `held`'s lease every third of `lease` until the returned guard is dropped.
    pub fn keep_alive(&self, held: &Leased, lease: Duration) -> KeepAlive {
        let pgmq = self.pgmq.clone();
        let held = held.clone();
        let task = self.runtime.spawn(async move {
            let every =
                (Duration::from_secs(lease_secs(lease) as u64) / 3).max(Duration::from_millis(200));
            loop {
                tokio::time::sleep(every).await;
                match renew(&pgmq, &held, lease).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    // A lost connection: try again next time; the lease may lapse.
                    Err(e) => tracing::warn!("renewing the lease of {:?}: {e}", held.item),
                }
            }
        });
        KeepAlive { task }
    }

    /// Commits an item's result with the items it brings, and deletes its message, in
    /// one transaction. A result already there (a redo after a lost lease) is kept as it
    /// is; returns whether this one was the first.
    pub fn complete(
        &self,
        done: &Leased,
        result: &Value,
        new_items: &[Item],
    ) -> Result<bool, QueueError> {
        self.runtime.block_on(async {
            let mut tx = self.pool.begin().await?;
            let added = sqlx::query(
                "INSERT INTO detvm_results (campaign, timeline, body, worker, reads)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (campaign, timeline) DO NOTHING",
            )
            .bind(&done.item.campaign)
            .bind(done.item.timeline)
            .bind(result)
            .bind(&self.worker)
            .bind(done.leases)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            self.send_new(&mut tx, new_items).await?;
            self.pgmq
                .delete_with_cxn(QUEUE, done.msg_id, &mut *tx)
                .await?;
            tx.commit().await?;
            Ok(added == 1)
        })
    }

    /// Forgets an item's result and key and queues it again: for a result whose
    /// snapshot file was lost (determinism makes the redo give the same result).
    pub fn redo(&self, item: &Item) -> Result<(), QueueError> {
        self.runtime.block_on(async {
            let mut tx = self.pool.begin().await?;
            for table in ["detvm_results", "detvm_item_keys"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE campaign = $1 AND timeline = $2"
                ))
                .bind(&item.campaign)
                .bind(item.timeline)
                .execute(&mut *tx)
                .await?;
            }
            self.send_new(&mut tx, std::slice::from_ref(item)).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Every result of a campaign, by timeline: (timeline, result, worker, reads).
    pub fn results(&self, campaign: &str) -> Result<Vec<Done>, QueueError> {
        self.runtime.block_on(async {
            let rows = sqlx::query(
                "SELECT timeline, body, worker, reads FROM detvm_results
                 WHERE campaign = $1 ORDER BY timeline",
            )
            .bind(campaign)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| -> Result<Done, QueueError> {
                    Ok(Done {
                        timeline: r.try_get(0)?,
                        body: r.try_get(1)?,
                        worker: r.try_get(2)?,
                        reads: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    /// Items of a campaign not done yet (queued or leased).
    pub fn pending(&self, campaign: &str) -> Result<i64, QueueError> {
        self.runtime.block_on(async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM detvm_item_keys k WHERE campaign = $1 AND NOT EXISTS
                 (SELECT 1 FROM detvm_results r WHERE r.campaign = k.campaign AND r.timeline = k.timeline)",
            )
            .bind(campaign)
            .fetch_one(&self.pool)
            .await?;
            Ok(n)
        })
    }
}

/// One committed result.
#[derive(Debug, Clone)]
pub struct Done {
    pub timeline: i64,
    pub body: Value,
    pub worker: String,
    /// How often the item was read before this result: 1 unless a lease lapsed.
    pub reads: i32,
}

async fn renew(pgmq: &PGMQueueExt, held: &Leased, lease: Duration) -> Result<bool, QueueError> {
    // pgmq's set_vt renews whoever holds the message and returns it with its read
    // count: when that is not our read (our lease lapsed and another worker read it),
    // the renewal is rolled back and the other's lease stays as it was.
    let mut tx = pgmq.connection.begin().await?;
    let message: Message<Item> = match pgmq
        .set_vt_with_cxn(QUEUE, held.msg_id, lease_secs(lease), &mut *tx)
        .await
    {
        Ok(m) => m,
        // No such message: the item is done (its message deleted).
        Err(pgmq::PgmqError::DatabaseError(sqlx::Error::RowNotFound)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if message.read_ct != held.leases {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Renews a lease while it lives (see [`Queue::keep_alive`]).
pub struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

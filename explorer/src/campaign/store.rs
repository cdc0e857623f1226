//! Campaigns in the run store (`.detvm/runs.db`): one row per campaign with its final
//! report, one per timeline (parent, moment, branch, faults, outcome), and each
//! timeline's own events (from its fork moment to its end). Files (volumes) live under
//! `.detvm/campaigns/<campaign>/`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::state::CampaignState;
use super::{CampaignReport, Timeline};
use crate::properties::Property;
use crate::store::{StoreError, StoredEvent};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    compose TEXT NOT NULL,
    seed INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    status TEXT NOT NULL,
    report TEXT
);
CREATE TABLE IF NOT EXISTS timelines (
    campaign TEXT NOT NULL REFERENCES campaigns(id),
    id INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (campaign, id)
);
CREATE TABLE IF NOT EXISTS timeline_events (
    campaign TEXT NOT NULL,
    timeline INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    vtime_ns INTEGER NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (campaign, timeline, seq)
);
CREATE TABLE IF NOT EXISTS timeline_properties (
    campaign TEXT NOT NULL,
    timeline INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (campaign, timeline)
);
CREATE TABLE IF NOT EXISTS campaign_state (
    campaign TEXT PRIMARY KEY,
    inputs_key TEXT NOT NULL,
    body TEXT NOT NULL
);
";

/// One timeline as a round commits it: the timeline, its own events, its properties.
pub struct RoundTimeline<'a> {
    pub timeline: &'a Timeline,
    pub events: &'a [StoredEvent],
    pub properties: &'a [Property],
}

pub struct CampaignStore {
    root: PathBuf,
    conn: Connection,
}

/// One campaign as listed.
#[derive(Debug, Clone)]
pub struct CampaignRecord {
    pub id: String,
    pub compose: String,
    pub seed: u64,
    pub started_at: String,
    pub status: String,
    pub report: Option<serde_json::Value>,
}

impl CampaignStore {
    pub fn open(root: &Path) -> Result<CampaignStore, StoreError> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let conn = crate::store::connect(root, SCHEMA)?;
        Ok(CampaignStore {
            root: root.to_path_buf(),
            conn,
        })
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.root.join("runs.db"),
            source,
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        super::campaigns_dir(&self.root).join(id)
    }

    /// Registers a campaign and makes its folder; returns its id (`c…`).
    pub fn create(&mut self, compose: &str, seed: u64) -> Result<String, StoreError> {
        let id = format!("c{}", &crate::store::new_run_id(seed)[1..]);
        std::fs::create_dir_all(self.dir(&id)).map_err(|source| StoreError::Io {
            path: self.dir(&id),
            source,
        })?;
        let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.conn
            .execute(
                "INSERT INTO campaigns (id, compose, seed, started_at, status) VALUES (?1, ?2, ?3, ?4, 'running')",
                params![id, compose, seed as i64, started],
            )
            .map_err(|e| self.sql(e))?;
        Ok(id)
    }

    /// A round: its timelines with their events and properties, and the campaign's
    /// state after it, in one transaction (a campaign killed later resumes from here).
    pub fn commit_round(
        &mut self,
        campaign: &str,
        round: &[RoundTimeline],
        state: &CampaignState,
    ) -> Result<(), StoreError> {
        let path = self.root.join("runs.db");
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let state_json = serde_json::to_string(state).expect("campaign state serializes");
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let run = |tx: &rusqlite::Transaction| -> rusqlite::Result<()> {
            let mut insert = tx.prepare(
                "INSERT OR REPLACE INTO timeline_events (campaign, timeline, seq, vtime_ns, node, kind, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for t in round {
                let id = t.timeline.id as i64;
                let body = serde_json::to_string(t.timeline).expect("timelines serialize");
                tx.execute(
                    "INSERT OR REPLACE INTO timelines (campaign, id, body) VALUES (?1, ?2, ?3)",
                    params![campaign, id, body],
                )?;
                let props = serde_json::to_string(t.properties).expect("properties serialize");
                tx.execute(
                    "INSERT OR REPLACE INTO timeline_properties (campaign, timeline, body) VALUES (?1, ?2, ?3)",
                    params![campaign, id, props],
                )?;
                for e in t.events {
                    insert.execute(params![
                        campaign,
                        id,
                        e.seq as i64,
                        e.vtime_ns as i64,
                        e.node,
                        e.kind,
                        e.body.to_string()
                    ])?;
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO campaign_state (campaign, inputs_key, body) VALUES (?1, ?2, ?3)",
                params![campaign, state.inputs_key, state_json],
            )?;
            Ok(())
        };
        run(&tx).map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// The state a campaign's last committed round left.
    pub fn state(&self, campaign: &str) -> Result<Option<CampaignState>, StoreError> {
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT body FROM campaign_state WHERE campaign = ?1",
                params![campaign],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(|e| self.sql(e))?;
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }

    /// Each timeline's properties, by timeline id.
    pub fn properties(&self, campaign: &str) -> Result<Vec<(u64, Vec<Property>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT timeline, body FROM timeline_properties WHERE campaign = ?1 ORDER BY timeline")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![campaign], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql(e))?;
        Ok(rows
            .into_iter()
            .map(|(t, body)| (t, serde_json::from_str(&body).unwrap_or_default()))
            .collect())
    }

    /// The newest finished campaign before `campaign` with the same inputs key (the
    /// same compose file, variables, images, kernel and duration; any seed).
    pub fn previous(
        &self,
        campaign: &str,
        inputs_key: &str,
    ) -> Result<Option<CampaignRecord>, StoreError> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT c.id FROM campaigns c JOIN campaign_state s ON s.campaign = c.id
                 WHERE s.inputs_key = ?2 AND c.id != ?1 AND c.status IN ('passed', 'failed')
                   AND c.rowid < (SELECT rowid FROM campaigns WHERE id = ?1)
                 ORDER BY c.rowid DESC LIMIT 1",
                params![campaign, inputs_key],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(|e| self.sql(e))?;
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// One campaign.
    pub fn get(&self, campaign: &str) -> Result<Option<CampaignRecord>, StoreError> {
        Ok(self.list()?.into_iter().find(|c| c.id == campaign))
    }

    /// Marks a campaign as stopped before its budget (it can be resumed).
    pub fn set_status(&mut self, campaign: &str, status: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE campaigns SET status = ?2 WHERE id = ?1",
                params![campaign, status],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    pub fn finish(&mut self, campaign: &str, report: &CampaignReport) -> Result<(), StoreError> {
        let status = if report.stopped == super::INTERRUPTED {
            "interrupted"
        } else if report.failed() {
            "failed"
        } else {
            "passed"
        };
        let json = serde_json::to_string(report).expect("reports serialize");
        self.conn
            .execute(
                "UPDATE campaigns SET status = ?2, report = ?3 WHERE id = ?1",
                params![campaign, status, json],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Every campaign, newest first.
    pub fn list(&self) -> Result<Vec<CampaignRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, compose, seed, started_at, status, report FROM campaigns ORDER BY started_at DESC, rowid DESC",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                let report: Option<String> = r.get(5)?;
                Ok(CampaignRecord {
                    id: r.get(0)?,
                    compose: r.get(1)?,
                    seed: r.get::<_, i64>(2)? as u64,
                    started_at: r.get(3)?,
                    status: r.get(4)?,
                    report: report.and_then(|t| serde_json::from_str(&t).ok()),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql(e))?;
        Ok(rows)
    }

    /// Every timeline of a campaign, by id.
    pub fn timelines(&self, campaign: &str) -> Result<Vec<Timeline>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT body FROM timelines WHERE campaign = ?1 ORDER BY id")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![campaign], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql(e))?;
        Ok(rows
            .iter()
            .filter_map(|body| serde_json::from_str(body).ok())
            .collect())
    }

    /// A timeline's own events, in order.
    pub fn events(&self, campaign: &str, timeline: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, vtime_ns, node, kind, body FROM timeline_events
                 WHERE campaign = ?1 AND timeline = ?2 ORDER BY seq",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![campaign, timeline as i64], |r| {
                let body: String = r.get(4)?;
                Ok(StoredEvent {
                    seq: r.get::<_, i64>(0)? as u64,
                    vtime_ns: r.get::<_, i64>(1)? as u64,
                    node: r.get(2)?,
                    kind: r.get(3)?,
                    body: serde_json::from_str(&body).unwrap_or_default(),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sql(e))?;
        Ok(rows)
    }
}

//! What a run found, as data: the CLI renders it as a table and JUnit XML; it is kept
//! as `report.json` in the run's folder.

use serde::{Deserialize, Serialize};

use crate::moment::Moment;
use crate::properties::{Property, Status};
use crate::run::runner::commands::CommandTally;
use crate::store::RunStatus;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub run: String,
    pub compose: String,
    pub seed: u64,
    pub status: RunStatus,
    pub vtime_end_ns: u64,
    pub trace_hash: String,
    /// The one command that runs this again, identically.
    pub reproduce: String,
    pub properties: Vec<Property>,
    /// How the test commands ended (succeeded, failed, ended by a fault).
    #[serde(default)]
    pub commands: Vec<CommandTally>,
    pub warnings: Vec<String>,
    /// What stopped the run, when something did (setup or infrastructure).
    pub message: Option<String>,
}

impl RunReport {
    pub fn failed(&self) -> impl Iterator<Item = &Property> {
        self.properties
            .iter()
            .filter(|p| p.status == Status::Failed)
    }

    pub fn moment(&self, vtime_ns: u64) -> Moment {
        Moment {
            run: self.run.clone(),
            vtime_ns,
        }
    }
}

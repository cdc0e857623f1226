//! What a campaign needs to go on after its last committed round: the frontier with
//! its energies, everything seen (coverage), the pick stream's position, the next
//! branch id, the snapshot files kept, and the wall time spent so far. The coordinator
//! commits it with the round's timelines in one transaction
//! ([`super::store::CampaignStore::commit_round`]); `detvm explore --resume C` loads it.

use serde::{Deserialize, Serialize};
use vmm::seed::StreamState;

use super::files::Files;
use super::frontier::Frontier;
use super::novelty::Coverage;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignState {
    /// Which earlier campaigns' findings compare with this one (same system and inputs).
    pub inputs_key: String,
    pub frontier: Frontier,
    pub coverage: Coverage,
    /// The `campaign/pick` stream, where the next pick reads.
    pub pick: StreamState,
    /// The next branch id (branches so far + 1); timeline ids equal branch ids.
    pub next_branch: u64,
    pub files: Files,
    /// Wall time of the campaign's earlier sessions (a resumed one adds its own).
    pub wall_ms: u64,
    /// Virtual time explored so far, over all timelines.
    pub virtual_ns: u64,
    /// `--branches` as the campaign was started (a resume without it goes on to it).
    pub branch_budget: Option<u32>,
}

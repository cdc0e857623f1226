//! Findings: a campaign's failing properties against the previous finished campaign of
//! the same system and inputs ([`super::store::CampaignStore::previous`]). A property
//! failing now and not then is **new**, failing in both **ongoing**, failing then and
//! not now **resolved**. Pure, so the notebook and a CI gate compute the same thing.

use serde::{Deserialize, Serialize};

use super::PropertySummary;
use crate::properties::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingKind {
    New,
    Ongoing,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub property: String,
    pub message: String,
    pub kind: FindingKind,
    /// The campaign compared against, if there was one.
    pub previous: Option<String>,
}

/// Findings of `current` against `previous` (the properties of an earlier campaign and
/// its id; `None` when there is none: every failure is then new). Ordered by kind, then
/// property id.
pub fn findings(
    current: &[PropertySummary],
    previous: Option<(&str, &[PropertySummary])>,
) -> Vec<Finding> {
    let failing = |list: &[PropertySummary], id: &str| {
        list.iter()
            .any(|p| p.id == id && p.status == Status::Failed)
    };
    let prev_id = previous.map(|(id, _)| id.to_string());
    let before: &[PropertySummary] = previous.map_or(&[], |(_, p)| p);
    let mut out: Vec<Finding> = current
        .iter()
        .filter(|p| p.status == Status::Failed)
        .map(|p| Finding {
            property: p.id.clone(),
            message: p.message.clone(),
            kind: if failing(before, &p.id) {
                FindingKind::Ongoing
            } else {
                FindingKind::New
            },
            previous: prev_id.clone(),
        })
        .collect();
    out.extend(
        before
            .iter()
            .filter(|p| p.status == Status::Failed && !failing(current, &p.id))
            .map(|p| Finding {
                property: p.id.clone(),
                message: p.message.clone(),
                kind: FindingKind::Resolved,
                previous: prev_id.clone(),
            }),
    );
    out.sort_by(|a, b| (a.kind, &a.property).cmp(&(b.kind, &b.property)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(id: &str, status: Status) -> PropertySummary {
        PropertySummary {
            id: id.into(),
            message: format!("{id} holds"),
            kind: "always".into(),
            must_hit: false,
            passing: 0,
            failing: u64::from(status == Status::Failed),
            first_failure: None,
            examples: Vec::new(),
            logs: Vec::new(),
            status,
        }
    }

    #[test]
    fn new_ongoing_and_resolved() {
        use Status::{Failed, Passed};
        let before = vec![prop("a", Failed), prop("b", Failed), prop("c", Passed)];
        let now = vec![prop("a", Failed), prop("b", Passed), prop("c", Failed)];
        let f = findings(&now, Some(("c1", &before)));
        let kinds: Vec<(&str, FindingKind)> =
            f.iter().map(|f| (f.property.as_str(), f.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                ("c", FindingKind::New),
                ("a", FindingKind::Ongoing),
                ("b", FindingKind::Resolved)
            ]
        );
        assert!(f.iter().all(|f| f.previous.as_deref() == Some("c1")));
    }

    #[test]
    fn without_a_previous_campaign_every_failure_is_new() {
        let now = vec![prop("a", Status::Failed), prop("b", Status::Passed)];
        let f = findings(&now, None);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::New);
        assert_eq!(f[0].previous, None);
    }
}

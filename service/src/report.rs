//! A campaign report read back as JSON (from a server's job, or a baseline file): the
//! reader side of `explorer::campaign::CampaignReport`'s serialization.

use serde_json::Value;

/// A property of the report: id, message, kind, failed or not, first failing moment.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyLine {
    pub id: String,
    pub message: String,
    pub kind: String,
    pub failed: bool,
    pub example: Option<String>,
}

pub fn properties(report: &Value) -> Vec<PropertyLine> {
    report["properties"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|p| PropertyLine {
                    id: p["id"].as_str().unwrap_or_default().to_string(),
                    message: p["message"].as_str().unwrap_or_default().to_string(),
                    kind: p["kind"].as_str().unwrap_or_default().to_string(),
                    failed: p["status"] == "failed",
                    example: p["examples"][0].as_str().map(String::from),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The properties as a plain table and the campaign's one-line result.
pub fn table(report: &Value) -> String {
    let mut out = String::new();
    for p in properties(report) {
        out.push_str(&format!(
            "{:<6}  {:<12}  {}{}\n",
            if p.failed { "FAIL" } else { "pass" },
            p.kind,
            p.message,
            p.example.map(|e| format!("  ({e})")).unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "campaign {}: {} timelines, {} branches; stopped: {}\n",
        report["campaign"].as_str().unwrap_or("?"),
        report["timelines"].as_array().map_or(0, |t| t.len()),
        report["branches"],
        report["stopped"].as_str().unwrap_or("?")
    ));
    out
}

//! Pausing, killing and partitioning from the notebook: the one place that turns a
//! cell's [`FaultAction`] into a World fault and injects it into a running session.
//! The fault is applied at the session's moment with `World::inject`, through the same
//! code as planned faults, so it is an event of the branch like any other.

use explorer::moment::parse_vtime;
use explorer::run::Session;
use vmm::world::{Fault, Span};

use crate::cells::FaultAction;

/// The World fault a notebook fault action stands for, checked against the nodes.
pub fn to_fault(action: &FaultAction, nodes: &[String]) -> Result<Fault, String> {
    let known = |n: &String| {
        if nodes.contains(n) {
            Ok(())
        } else {
            Err(format!(
                "no node `{n}` (the world has: {})",
                nodes.join(", ")
            ))
        }
    };
    Ok(match action {
        FaultAction::Pause { node, duration } => {
            known(node)?;
            let ns = parse_vtime(duration)?;
            Fault::Pause {
                node: node.clone(),
                duration: Span::from_nanos(i64::try_from(ns).map_err(|_| "pause too long")?),
            }
        }
        FaultAction::Kill { node } => {
            known(node)?;
            Fault::Kill {
                node: node.clone(),
                restart_after: None,
            }
        }
        FaultAction::Partition { a, b } => {
            known(a)?;
            known(b)?;
            if a == b {
                return Err(format!("partition `{a}` from itself"));
            }
            Fault::Partition {
                groups: vec![vec![a.clone()], vec![b.clone()]],
                one_way: false,
                duration: None,
            }
        }
    })
}

/// Injects the fault into the session's World now.
pub fn inject(session: &mut Session, action: &FaultAction) -> Result<(), String> {
    let fault = to_fault(action, &session.world().node_names())?;
    session.world_mut().inject(fault).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_become_world_faults_on_known_nodes_only() {
        let nodes = vec!["kv".to_string(), "driver".to_string()];
        let pause = FaultAction::Pause {
            node: "kv".into(),
            duration: "1500ms".into(),
        };
        assert_eq!(
            to_fault(&pause, &nodes).unwrap(),
            Fault::Pause {
                node: "kv".into(),
                duration: Span::from_millis(1500)
            }
        );
        let part = FaultAction::Partition {
            a: "kv".into(),
            b: "driver".into(),
        };
        assert!(
            matches!(to_fault(&part, &nodes).unwrap(), Fault::Partition { groups, .. } if groups.len() == 2)
        );
        let unknown = FaultAction::Kill { node: "db".into() };
        assert!(to_fault(&unknown, &nodes)
            .unwrap_err()
            .contains("no node `db`"));
        let itself = FaultAction::Partition {
            a: "kv".into(),
            b: "kv".into(),
        };
        assert!(to_fault(&itself, &nodes).is_err());
    }
}

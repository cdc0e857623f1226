//! Each service's life as the runner sees it: booting, its agent ready, started,
//! healthy, exited; and which dependencies let it start.

use detvm_protocol::spec::ServiceSpec;

use crate::compose::{Condition, Healthcheck, Service};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Life {
    /// The VM boots; the agent has not said hello.
    Booting,
    /// The agent said hello; the service waits for its dependencies.
    Ready,
    /// `Start` was sent.
    Starting,
    Running,
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The agent could not start it (missing binary, unknown user, …).
    Failed(String),
    /// Its VM was killed by a fault; a restart boots it again.
    Down,
}

/// A service as the runner tracks it: its compose definition and resolved run spec
/// (rebuilt from the compose file on replay) and its [`ServiceState`] (saved in snapshots).
#[derive(Debug, Clone)]
pub struct Tracked {
    pub service: Service,
    pub spec: ServiceSpec,
    pub state: ServiceState,
}

/// The part of a tracked service that changes during a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceState {
    pub life: Life,
    pub started_at: Option<u64>,
    pub healthy: bool,
    pub health_failures: u32,
    pub next_health_at: Option<u64>,
    /// The exec id of a health check in flight and when it times out.
    pub health_exec: Option<(u64, u64)>,
    /// Output of the health check in flight (its last line).
    pub last_health_output: String,
    /// How the last failed health check failed, for the setup-failure message.
    pub last_health_failure: String,
}

impl Default for ServiceState {
    fn default() -> Self {
        ServiceState {
            life: Life::Booting,
            started_at: None,
            healthy: false,
            health_failures: 0,
            next_health_at: None,
            health_exec: None,
            last_health_output: String::new(),
            last_health_failure: String::new(),
        }
    }
}

impl Tracked {
    pub fn new(service: Service, spec: ServiceSpec) -> Tracked {
        Tracked {
            service,
            spec,
            state: ServiceState::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.service.name
    }

    pub fn life(&self) -> &Life {
        &self.state.life
    }

    pub fn healthcheck(&self) -> Option<&Healthcheck> {
        self.service.healthcheck.as_ref()
    }

    /// Started and, when it has a healthcheck, healthy.
    pub fn up(&self) -> bool {
        self.state.life == Life::Running && (self.healthcheck().is_none() || self.state.healthy)
    }
}

/// Whether `condition` on `dep` holds.
pub fn satisfied(dep: &Tracked, condition: Condition) -> bool {
    match condition {
        Condition::Started => matches!(dep.state.life, Life::Running | Life::Exited { .. }),
        Condition::Healthy => dep.state.life == Life::Running && dep.state.healthy,
        Condition::CompletedSuccessfully => {
            matches!(dep.state.life, Life::Exited { code: Some(0), .. })
        }
    }
}

/// Services whose agent is ready and whose dependencies all hold: start them now.
pub fn startable(services: &[Tracked]) -> Vec<usize> {
    let find = |name: &str| services.iter().find(|s| s.name() == name);
    services
        .iter()
        .enumerate()
        .filter(|(_, s)| s.state.life == Life::Ready)
        .filter(|(_, s)| {
            s.service
                .depends_on
                .iter()
                .all(|d| find(&d.service).is_some_and(|t| satisfied(t, d.condition)))
        })
        .map(|(i, _)| i)
        .collect()
}

/// A dependency that can no longer be met (its service exited badly or failed).
pub fn blocked(services: &[Tracked]) -> Option<String> {
    let find = |name: &str| services.iter().find(|s| s.name() == name);
    for s in services.iter().filter(|s| s.state.life == Life::Ready) {
        for d in &s.service.depends_on {
            let Some(t) = find(&d.service) else { continue };
            let dead = match (&t.state.life, d.condition) {
                (Life::Failed(_), _) => true,
                (Life::Exited { code, .. }, Condition::CompletedSuccessfully) => *code != Some(0),
                (Life::Exited { .. }, Condition::Healthy) => true,
                _ => false,
            };
            if dead {
                return Some(format!(
                    "`{}` waits for `{}` ({:?}), which can no longer happen: {:?}",
                    s.name(),
                    t.name(),
                    d.condition,
                    t.state.life
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::Dependency;

    fn svc(name: &str, deps: &[(&str, Condition)]) -> Tracked {
        let service = Service {
            name: name.into(),
            line: 1,
            image: "x".into(),
            entrypoint: None,
            command: None,
            environment: vec![],
            hostname: name.into(),
            depends_on: deps
                .iter()
                .map(|(s, c)| Dependency {
                    service: s.to_string(),
                    condition: *c,
                })
                .collect(),
            healthcheck: None,
            tmpfs: vec![],
            volumes: vec![],
            working_dir: None,
            user: None,
            stop_grace_period: std::time::Duration::from_secs(10),
            memory: 1,
            vcpus: 1,
            volume_size: 1,
        };
        Tracked::new(service, ServiceSpec::default())
    }

    #[test]
    fn dependencies_gate_the_start() {
        let mut s = vec![
            svc("db", &[]),
            svc("web", &[("db", Condition::Healthy)]),
            svc("job", &[("db", Condition::CompletedSuccessfully)]),
        ];
        for t in &mut s {
            t.state.life = Life::Ready;
        }
        assert_eq!(startable(&s), [0]);
        s[0].state.life = Life::Running;
        assert_eq!(startable(&s), Vec::<usize>::new(), "running is not healthy");
        s[0].state.healthy = true;
        assert_eq!(startable(&s), [1]);
        s[0].state.life = Life::Exited {
            code: Some(1),
            signal: None,
        };
        assert!(blocked(&s).unwrap().contains("`web` waits for `db`"));
    }
}

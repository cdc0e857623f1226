//! What the host tells the agent to run (`HostMessage::Start`), and the pure function that
//! turns an image config plus compose overrides into it, with Docker's rules.

use serde::{Deserialize, Serialize};

/// The `PATH` Docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The service the agent runs, fully resolved on the host except for `user`, which
/// the agent resolves against the container's own /etc/passwd and /etc/group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceSpec {
    /// The program and its arguments (entrypoint followed by cmd); `argv[0]` is looked up
    /// in the container's `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// `KEY=value` entries, the whole environment (the agent adds `HOSTNAME`, `HOME`
    /// and `ANTITHESIS_SDK_LOCAL_OUTPUT` when they are missing).
    pub env: Vec<String>,
    /// Empty means `/`; created (owned by root) if the image lacks it, as Docker does.
    pub working_dir: String,
    /// `name`, `uid`, `name:group` or `uid:gid`; empty means root.
    pub user: String,
    /// Empty keeps the one from the kernel command line (`detvm.hostname=`).
    pub hostname: String,
    /// Written to the container's /etc/hosts after the localhost lines.
    pub hosts: Vec<HostEntry>,
    /// The lines of the container's /etc/resolv.conf (e.g. `nameserver 10.0.0.1`).
    pub dns: Vec<String>,
    /// File systems mounted in the container before the service starts (compose
    /// `volumes` and `tmpfs`), in order.
    pub mounts: Vec<Mount>,
}

/// One mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: MountSource,
    /// Absolute path inside the container; created if missing.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountSource {
    /// The ext4 virtio-blk disk whose serial (`/sys/block/vdX/serial`) is `serial`.
    Disk {
        serial: String,
    },
    Tmpfs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    pub ip: String,
}

/// The run part of an image config (the images crate's `ImageConfig` maps onto it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRun {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// A compose service's overrides. `None` keeps the image's value; `Some(vec![])` for
/// `entrypoint` clears it (compose's `entrypoint: []`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// `KEY=value`; a key the image sets is replaced in place, a new key is appended.
    pub environment: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("image config has neither entrypoint nor cmd: set `command:` or `entrypoint:` in the compose service")]
    NoCommand,
    #[error("environment entry {0:?} has no `=`: write it as KEY=value in the compose service")]
    BadEnv(String),
    #[error("working_dir {0:?} is not absolute: write it as a path starting with `/`")]
    RelativeWorkdir(String),
}

/// The spec to run `image` with `overrides`, as Docker does: an overriding entrypoint
/// drops the image's cmd (unless `command` is also given); argv is entrypoint + cmd;
/// environment overrides replace keys in place; `PATH` defaults to [`DEFAULT_PATH`].
/// Hostname, hosts and DNS are left empty for the caller.
pub fn resolve(image: &ImageRun, overrides: &Overrides) -> Result<ServiceSpec, SpecError> {
    let entrypoint = overrides
        .entrypoint
        .clone()
        .unwrap_or_else(|| image.entrypoint.clone());
    let cmd = match (&overrides.command, &overrides.entrypoint) {
        (Some(command), _) => command.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone(),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let mut env: Vec<String> = Vec::new();
    for entry in image.env.iter().chain(&overrides.environment) {
        let key = env_key(entry).ok_or_else(|| SpecError::BadEnv(entry.clone()))?;
        match env.iter_mut().find(|e| env_key(e) == Some(key)) {
            Some(existing) => existing.clone_from(entry),
            None => env.push(entry.clone()),
        }
    }
    if !env.iter().any(|e| env_key(e) == Some("PATH")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let working_dir = overrides
        .working_dir
        .clone()
        .unwrap_or_else(|| image.working_dir.clone());
    if !working_dir.is_empty() && !working_dir.starts_with('/') {
        return Err(SpecError::RelativeWorkdir(working_dir));
    }
    Ok(ServiceSpec {
        argv,
        env,
        working_dir,
        user: overrides.user.clone().unwrap_or_else(|| image.user.clone()),
        ..ServiceSpec::default()
    })
}

/// The key of a `KEY=value` entry (`None` without `=` or with an empty key).
pub fn env_key(entry: &str) -> Option<&str> {
    entry
        .split_once('=')
        .map(|(k, _)| k)
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageRun {
        ImageRun {
            entrypoint: strings(&["/usr/bin/etcd"]),
            cmd: strings(&["--name", "etcd"]),
            env: strings(&["PATH=/bin", "A=1", "B=2"]),
            working_dir: "/var/lib/etcd".into(),
            user: "etcd".into(),
        }
    }

    #[test]
    fn the_image_config_alone() {
        let s = resolve(&image(), &Overrides::default()).unwrap();
        assert_eq!(s.argv, ["/usr/bin/etcd", "--name", "etcd"]);
        assert_eq!(s.env, ["PATH=/bin", "A=1", "B=2"]);
        assert_eq!(s.working_dir, "/var/lib/etcd");
        assert_eq!(s.user, "etcd");
        assert!(s.hostname.is_empty() && s.hosts.is_empty() && s.dns.is_empty());
    }

    #[test]
    fn command_replaces_cmd_and_keeps_the_entrypoint() {
        let o = Overrides {
            command: Some(strings(&["--version"])),
            ..Overrides::default()
        };
        assert_eq!(
            resolve(&image(), &o).unwrap().argv,
            ["/usr/bin/etcd", "--version"]
        );
    }

    #[test]
    fn entrypoint_override_drops_the_image_cmd() {
        let o = Overrides {
            entrypoint: Some(strings(&["/bin/sh", "-c"])),
            ..Overrides::default()
        };
        assert_eq!(resolve(&image(), &o).unwrap().argv, ["/bin/sh", "-c"]);
        let o = Overrides {
            entrypoint: Some(strings(&["/bin/sh", "-c"])),
            command: Some(strings(&["echo hi"])),
            ..Overrides::default()
        };
        assert_eq!(
            resolve(&image(), &o).unwrap().argv,
            ["/bin/sh", "-c", "echo hi"]
        );
        // An empty entrypoint clears it; cmd then runs alone.
        let o = Overrides {
            entrypoint: Some(vec![]),
            command: Some(strings(&["/bin/true"])),
            ..Overrides::default()
        };
        assert_eq!(resolve(&image(), &o).unwrap().argv, ["/bin/true"]);
    }

    #[test]
    fn environment_workdir_and_user_overrides() {
        let o = Overrides {
            environment: strings(&["B=override", "C=3", "A=x=y"]),
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            ..Overrides::default()
        };
        let s = resolve(&image(), &o).unwrap();
        assert_eq!(s.env, ["PATH=/bin", "A=x=y", "B=override", "C=3"]);
        assert_eq!(s.working_dir, "/srv");
        assert_eq!(s.user, "1000:1000");
    }

    #[test]
    fn path_defaults_when_the_image_has_none() {
        let img = ImageRun {
            cmd: strings(&["sh"]),
            env: strings(&["X=1"]),
            ..ImageRun::default()
        };
        let s = resolve(&img, &Overrides::default()).unwrap();
        assert_eq!(s.env, [format!("PATH={DEFAULT_PATH}"), "X=1".into()]);
    }

    #[test]
    fn bad_inputs_say_what_to_fix() {
        let e = resolve(&ImageRun::default(), &Overrides::default()).unwrap_err();
        assert_eq!(e, SpecError::NoCommand);
        assert!(e.to_string().contains("set `command:` or `entrypoint:`"));
        // Clearing the entrypoint of an image without cmd leaves nothing to run.
        let o = Overrides {
            entrypoint: Some(vec![]),
            ..Overrides::default()
        };
        assert_eq!(resolve(&image(), &o), Err(SpecError::NoCommand));
        let o = Overrides {
            environment: strings(&["NOVALUE"]),
            ..Overrides::default()
        };
        assert_eq!(
            resolve(&image(), &o),
            Err(SpecError::BadEnv("NOVALUE".into()))
        );
        let o = Overrides {
            working_dir: Some("srv".into()),
            ..Overrides::default()
        };
        assert!(matches!(
            resolve(&image(), &o),
            Err(SpecError::RelativeWorkdir(_))
        ));
    }
}

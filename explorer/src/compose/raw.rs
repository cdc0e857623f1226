//! The compose file as written: every field detvm reads, with its line where a later
//! check needs one. Deserialised by hand-written map visitors so that each key is one
//! of: read, tolerated with a warning (it has no meaning inside detvm), an `x-`
//! extension (ignored, as compose does), or an error naming the field.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A key compose knows that detvm accepts but ignores, with why, for the warning.
#[derive(Debug, Clone, PartialEq)]
pub struct Ignored {
    pub field: String,
    pub line: u64,
    pub why: &'static str,
}

#[derive(Debug, Default)]
pub struct RawFile {
    pub services: Option<Spanned<BTreeMap<String, Spanned<RawService>>>>,
    pub detvm: Option<Spanned<RawDetvm>>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
    pub ignored: Vec<Ignored>,
}

#[derive(Debug, Default)]
pub struct RawService {
    pub image: Option<Spanned<String>>,
    pub command: Option<Spanned<StringOrList>>,
    pub entrypoint: Option<Spanned<StringOrList>>,
    pub environment: Option<Spanned<EnvEntries>>,
    pub env_file: Option<Spanned<StringOrList>>,
    pub hostname: Option<Spanned<String>>,
    pub depends_on: Option<Spanned<DependsOn>>,
    pub healthcheck: Option<Spanned<RawHealthcheck>>,
    pub networks: Option<Spanned<NameList>>,
    pub tmpfs: Option<Spanned<StringOrList>>,
    pub volumes: Option<Spanned<Vec<Spanned<String>>>>,
    pub working_dir: Option<Spanned<String>>,
    pub user: Option<Spanned<Scalar>>,
    pub stop_grace_period: Option<Spanned<String>>,
    pub detvm: Option<Spanned<RawServiceDetvm>>,
    pub ignored: Vec<Ignored>,
}

/// `x-detvm` at the top level: detvm's own settings for the run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetvm {
    pub seed: Option<u64>,
    pub duration: Option<String>,
    /// Wall clock at power-on: RFC 3339 (`2038-01-19T03:00:00Z`) or Unix seconds.
    pub epoch: Option<Scalar>,
    pub memory: Option<String>,
    pub vcpus: Option<u8>,
    /// A fault plan (docs/world.md), kept as data until the World reads it.
    pub faults: Option<serde_json::Value>,
    /// `swarm` (drawn from the seed) or `none`.
    pub fault_mode: Option<String>,
    /// A script, relative to the compose file, that builds missing images.
    pub prepare: Option<String>,
}

/// `x-detvm` inside a service.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceDetvm {
    pub memory: Option<String>,
    pub vcpus: Option<u8>,
    /// Size of each named volume's writable disk, e.g. `64MiB`.
    pub volume_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthcheck {
    pub test: Option<StringOrList>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub start_period: Option<String>,
    #[allow(dead_code)] // accepted for compatibility; detvm checks at `interval`
    pub start_interval: Option<String>,
    pub disable: Option<bool>,
}

/// A YAML scalar that compose lets users write as a string or a number (`user: 1000`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

#[derive(Debug, Clone, PartialEq)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

/// `environment:` as a map (`KEY: value`, `KEY:` for unset) or a list (`KEY=value`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnvEntries(pub Vec<(String, Option<String>)>);

/// `networks:` in a service: a list of names or a map of name → options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NameList(pub Vec<String>);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DependsOn(pub Vec<(String, String)>);

fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct ScalarVisitor;
    impl<'de> Visitor<'de> for ScalarVisitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string, number or boolean")
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(ScalarVisitor)
}

/// A present scalar (null is refused).
struct SomeScalar(String);
impl<'de> Deserialize<'de> for SomeScalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar_text(d)?
            .map(SomeScalar)
            .ok_or_else(|| de::Error::custom("expected a value, found null"))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Scalar(SomeScalar::deserialize(d)?.0))
    }
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrList::String(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(SomeScalar(s)) = seq.next_element()? {
                    items.push(s);
                }
                Ok(StringOrList::List(items))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for EnvEntries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvEntries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of NAME: value or a list of NAME=value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<OptionalScalar>()?.0;
                    out.push((key, value));
                }
                Ok(EnvEntries(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(SomeScalar(item)) = seq.next_element()? {
                    match item.split_once('=') {
                        Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
                        None => out.push((item, None)),
                    }
                }
                Ok(EnvEntries(out))
            }
        }
        d.deserialize_any(V)
    }
}

struct OptionalScalar(Option<String>);
impl<'de> Deserialize<'de> for OptionalScalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(OptionalScalar(scalar_text(d)?))
    }
}

impl<'de> Deserialize<'de> for NameList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NameList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of names or a map of name: options")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    out.push(key);
                }
                Ok(NameList(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.push(name);
                }
                Ok(NameList(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for DependsOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            condition: Option<String>,
            #[allow(dead_code)]
            restart: Option<bool>,
            #[allow(dead_code)]
            required: Option<bool>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DependsOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of service names or a map of service: {condition}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let long = map.next_value::<Long>()?;
                    let condition = long
                        .condition
                        .unwrap_or_else(|| "service_started".to_string());
                    out.push((key, condition));
                }
                Ok(DependsOn(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.push((name, "service_started".to_string()));
                }
                Ok(DependsOn(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Marks the line of the key an error is about: serde-saphyr places custom errors at
/// the last value it read, which is the line before an unknown key.
pub const LINE_MARK: &str = "@@line=";

fn key_error<E: de::Error>(key: &Spanned<String>, message: String) -> E {
    E::custom(format!("{LINE_MARK}{}@@{message}", key.referenced.line()))
}

/// Reads the value of a tolerated key and records where it was.
fn ignore<'de, A: MapAccess<'de>>(
    map: &mut A,
    field: String,
    why: &'static str,
    out: &mut Vec<Ignored>,
) -> Result<(), A::Error> {
    let spanned = map.next_value::<Spanned<IgnoredAny>>()?;
    out.push(Ignored {
        field,
        line: spanned.referenced.line(),
        why,
    });
    Ok(())
}

/// Service keys compose defines that detvm tolerates, and why they do not matter here.
fn tolerated_service_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "container_name" => "each service runs in its own VM named after the service",
        "ports" | "expose" => {
            "services reach each other on detvm's network; nothing is published to the host"
        }
        "restart" => "detvm restarts services only through faults (docs/world.md)",
        "labels" | "logging" | "init" | "stdin_open" | "tty" | "platform" | "pull_policy" => {
            "it has no effect inside a detvm VM"
        }
        "deploy" | "cpus" | "mem_limit" | "mem_reservation" | "ulimits" | "shm_size" => {
            "set resources with `x-detvm: {memory, vcpus}` instead"
        }
        "cap_add" | "cap_drop" | "privileged" | "security_opt" | "sysctls" => {
            "the service runs as root-capable in its own VM; these are not applied"
        }
        "dns" | "dns_search" | "extra_hosts" => {
            "detvm writes /etc/hosts and /etc/resolv.conf for the compose network"
        }
        _ => return None,
    })
}

/// Keys detvm cannot honour: using them would change what is tested, so they are errors.
fn refused_service_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "build" => "detvm needs a built image: build it (`docker build` + `docker save`, or `detvm image build`), load it with `detvm image load`, and name it in `image:`",
        "network_mode" | "pid" | "ipc" | "userns_mode" => "every service has its own VM and network stack",
        "devices" | "gpus" => "a detvm VM has no host devices",
        "extends" | "profiles" | "secrets" | "configs" | "links" | "external_links" | "volumes_from" => "detvm does not support it yet",
        _ => return None,
    })
}

impl<'de> Deserialize<'de> for RawService {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawService;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a service definition (a map)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut s = RawService::default();
                while let Some(spanned_key) = map.next_key::<Spanned<String>>()? {
                    let key = spanned_key.value.clone();
                    match key.as_str() {
                        "image" => s.image = Some(map.next_value()?),
                        "command" => s.command = Some(map.next_value()?),
                        "entrypoint" => s.entrypoint = Some(map.next_value()?),
                        "environment" => s.environment = Some(map.next_value()?),
                        "env_file" => s.env_file = Some(map.next_value()?),
                        "hostname" => s.hostname = Some(map.next_value()?),
                        "depends_on" => s.depends_on = Some(map.next_value()?),
                        "healthcheck" => s.healthcheck = Some(map.next_value()?),
                        "networks" => s.networks = Some(map.next_value()?),
                        "tmpfs" => s.tmpfs = Some(map.next_value()?),
                        "volumes" => s.volumes = Some(map.next_value()?),
                        "working_dir" => s.working_dir = Some(map.next_value()?),
                        "user" => s.user = Some(map.next_value()?),
                        "stop_grace_period" => s.stop_grace_period = Some(map.next_value()?),
                        "x-detvm" => s.detvm = Some(map.next_value()?),
                        k if k.starts_with("x-") => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        k => {
                            if let Some(why) = tolerated_service_key(k) {
                                ignore(&mut map, key.clone(), why, &mut s.ignored)?;
                            } else if let Some(why) = refused_service_key(k) {
                                return Err(key_error(
                                    &spanned_key,
                                    format!("`{k}` is not supported: {why}"),
                                ));
                            } else {
                                return Err(key_error(
                                    &spanned_key,
                                    format!("unknown service field `{k}` (see docs/compose.md for the fields detvm reads)"),
                                ));
                            }
                        }
                    }
                }
                Ok(s)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a compose file (a map with `services:`)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut file = RawFile::default();
                while let Some(spanned_key) = map.next_key::<Spanned<String>>()? {
                    let key = spanned_key.value.clone();
                    match key.as_str() {
                        "services" => file.services = Some(map.next_value()?),
                        "x-detvm" => file.detvm = Some(map.next_value()?),
                        "networks" => {
                            let names: Option<NameList> = map.next_value()?;
                            file.networks = names.unwrap_or_default().0;
                        }
                        "volumes" => {
                            let names: Option<NameList> = map.next_value()?;
                            file.volumes = names.unwrap_or_default().0;
                        }
                        "version" => ignore(
                            &mut map,
                            key.clone(),
                            "compose itself ignores it",
                            &mut file.ignored,
                        )?,
                        "name" => ignore(
                            &mut map,
                            key.clone(),
                            "runs are named by their run id",
                            &mut file.ignored,
                        )?,
                        k if k.starts_with("x-") => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        k => {
                            return Err(key_error(
                                &spanned_key,
                                format!("unknown top-level field `{k}`; detvm reads `services`, `networks`, `volumes` and `x-detvm`"),
                            ))
                        }
                    }
                }
                Ok(file)
            }
        }
        d.deserialize_map(V)
    }
}

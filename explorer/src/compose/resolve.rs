//! From the file as written ([`raw`](super::raw)) to the checked model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::raw::{self, RawFile, RawService, StringOrList};
use super::units::{parse_duration, parse_memory};
use super::{
    Compose, ComposeError, Condition, Dependency, FaultMode, Healthcheck, Service, Settings,
    Volume, Warning,
};

const DEFAULT_MEMORY: u64 = 256 << 20;
const DEFAULT_VOLUME_SIZE: u64 = 64 << 20;

struct Ctx<'a> {
    file: &'a Path,
    dir: PathBuf,
    warnings: Vec<Warning>,
}

impl Ctx<'_> {
    fn err(&self, line: u64, message: impl Into<String>) -> ComposeError {
        ComposeError {
            file: self.file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    fn ignored(&mut self, items: Vec<raw::Ignored>, prefix: &str) {
        for item in items {
            self.warnings.push(Warning {
                file: self.file.to_path_buf(),
                line: item.line,
                field: format!("{prefix}{}", item.field),
                message: format!("ignored: {}", item.why),
            });
        }
    }
}

pub fn resolve(file: &Path, raw: RawFile, warnings: Vec<Warning>) -> Result<Compose, ComposeError> {
    let mut ctx = Ctx {
        file,
        dir: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        warnings,
    };
    ctx.ignored(raw.ignored, "");
    let settings = settings(&ctx, raw.detvm)?;
    let Some(services) = raw.services else {
        return Err(ctx.err(
            0,
            "no `services:`: a compose file needs at least one service",
        ));
    };
    if services.value.is_empty() {
        return Err(ctx.err(services.referenced.line(), "`services:` is empty"));
    }
    let names: Vec<String> = services.value.keys().cloned().collect();
    let mut resolved = Vec::new();
    for (name, spanned) in services.value {
        let line = spanned.referenced.line();
        resolved.push(service(
            &mut ctx,
            &settings,
            &names,
            &raw.volumes,
            name,
            line,
            spanned.value,
        )?);
    }
    check_dependencies(&ctx, &resolved)?;
    Ok(Compose {
        path: file.to_path_buf(),
        services: resolved,
        settings,
        warnings: ctx.warnings,
    })
}

fn settings(ctx: &Ctx, detvm: Option<Spanned<raw::RawDetvm>>) -> Result<Settings, ComposeError> {
    let line = detvm.as_ref().map_or(0, |d| d.referenced.line());
    let d = detvm.map(|d| d.value).unwrap_or_default();
    let field = |name: &str, e: String| ctx.err(line, format!("x-detvm.{name}: {e}"));
    let duration = d
        .duration
        .map(|t| parse_duration(&t))
        .transpose()
        .map_err(|e| field("duration", e))?;
    let epoch = d
        .epoch
        .map(|raw::Scalar(t)| parse_epoch(&t))
        .transpose()
        .map_err(|e| field("epoch", e))?;
    let memory = d
        .memory
        .map(|t| parse_memory(&t))
        .transpose()
        .map_err(|e| field("memory", e))?
        .unwrap_or(DEFAULT_MEMORY);
    let fault_mode = match d.fault_mode.as_deref() {
        None | Some("swarm") => FaultMode::Swarm,
        Some("none") => FaultMode::None,
        Some(other) => {
            return Err(field(
                "fault_mode",
                format!("`{other}` is not a fault mode; use `swarm` or `none`"),
            ))
        }
    };
    Ok(Settings {
        seed: d.seed,
        duration,
        epoch,
        memory,
        vcpus: check_vcpus(d.vcpus.unwrap_or(1)).map_err(|e| field("vcpus", e))?,
        faults: d.faults,
        fault_mode,
        prepare: d.prepare.map(|p| ctx.dir.join(p)),
    })
}

/// Unix seconds, or an RFC 3339 time such as `2038-01-19T03:00:00Z`.
pub fn parse_epoch(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.trim().parse::<i64>() {
        return Ok(secs);
    }
    let time = humantime::parse_rfc3339_weak(text.trim()).map_err(|e| {
        format!(
            "`{text}` is neither Unix seconds nor an RFC 3339 time like 2038-01-19T03:00:00Z ({e})"
        )
    })?;
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("`{text}` is before 1970"))?
        .as_secs();
    i64::try_from(secs).map_err(|_| format!("`{text}` is too far in the future"))
}

fn check_vcpus(n: u8) -> Result<u8, String> {
    if (1..=8).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} vCPUs: detvm supports 1 to 8"))
    }
}

fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

fn argv(ctx: &Ctx, field: &str, value: Spanned<StringOrList>) -> Result<Vec<String>, ComposeError> {
    match value.value {
        StringOrList::List(items) => Ok(items),
        StringOrList::String(text) => shell_words::split(&text).map_err(|e| {
            ctx.err(
                value.referenced.line(),
                format!("`{field}`: cannot split `{text}` into words: {e}"),
            )
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn service(
    ctx: &mut Ctx,
    settings: &Settings,
    names: &[String],
    declared_volumes: &[String],
    name: String,
    line: u64,
    s: RawService,
) -> Result<Service, ComposeError> {
    if !valid_service_name(&name) {
        return Err(ctx.err(
            line,
            format!("service name `{name}`: use lowercase letters, digits, `_`, `.` and `-`, starting with a letter or digit"),
        ));
    }
    let prefix = format!("services.{name}.");
    ctx.ignored(s.ignored, &prefix);
    let here = |field: &str| format!("services.{name}.{field}");
    let image = s.image.map(|i| i.value).ok_or_else(|| {
        ctx.err(
            line,
            format!("service `{name}` has no `image:`; name an image from `detvm image ls`"),
        )
    })?;
    let entrypoint = s
        .entrypoint
        .map(|v| argv(ctx, &here("entrypoint"), v))
        .transpose()?;
    let command = s
        .command
        .map(|v| argv(ctx, &here("command"), v))
        .transpose()?;

    let mut environment: Vec<(String, String)> = Vec::new();
    if let Some(files) = s.env_file {
        let list = match files.value {
            StringOrList::String(f) => vec![f],
            StringOrList::List(l) => l,
        };
        for f in list {
            let path = ctx.dir.join(&f);
            let entries = read_env_file(&path).map_err(|e| ComposeError {
                line: if e.line == 0 {
                    files.referenced.line()
                } else {
                    e.line
                },
                ..e
            })?;
            environment.extend(entries);
        }
    }
    if let Some(env) = s.environment {
        for (key, value) in env.value.0 {
            match value {
                Some(v) => environment.push((key, v)),
                None => ctx.warnings.push(Warning {
                    file: ctx.file.to_path_buf(),
                    line: env.referenced.line(),
                    field: here(&format!("environment.{key}")),
                    message:
                        "has no value and detvm never passes the host environment; it is left unset"
                            .into(),
                }),
            }
        }
    }
    environment = last_wins(environment);

    let mut depends_on = Vec::new();
    if let Some(deps) = s.depends_on {
        let dline = deps.referenced.line();
        for (service, condition) in deps.value.0 {
            if !names.contains(&service) {
                return Err(ctx.err(
                    dline,
                    format!(
                        "{}: unknown service `{service}` (services: {})",
                        here("depends_on"),
                        names.join(", ")
                    ),
                ));
            }
            let condition = match condition.as_str() {
                "service_started" => Condition::Started,
                "service_healthy" => Condition::Healthy,
                "service_completed_successfully" => Condition::CompletedSuccessfully,
                other => return Err(ctx.err(dline, format!("{}.{service}.condition: `{other}`; use service_started, service_healthy or service_completed_successfully", here("depends_on")))),
            };
            depends_on.push(Dependency { service, condition });
        }
    }

    let healthcheck = s
        .healthcheck
        .map(|h| healthcheck(ctx, &here("healthcheck"), h))
        .transpose()?
        .flatten();
    let tmpfs = match s.tmpfs.map(|t| t.value) {
        None => Vec::new(),
        Some(StringOrList::String(p)) => vec![p],
        Some(StringOrList::List(l)) => l,
    };
    let mut volumes = Vec::new();
    if let Some(list) = s.volumes {
        for (index, v) in list.value.into_iter().enumerate() {
            volumes.push(volume(ctx, &name, index, declared_volumes, v)?);
        }
    }
    let stop_grace_period = s
        .stop_grace_period
        .map(|g| {
            parse_duration(&g.value).map_err(|e| {
                ctx.err(
                    g.referenced.line(),
                    format!("{}: {e}", here("stop_grace_period")),
                )
            })
        })
        .transpose()?
        .unwrap_or(Duration::from_secs(10));
    let x = s.detvm.as_ref().map(|d| (&d.value, d.referenced.line()));
    let xline = x.map_or(line, |(_, l)| l);
    let x_err =
        |f: &str, e: String| ctx.err(xline, format!("{}: {e}", here(&format!("x-detvm.{f}"))));
    let memory = match x.and_then(|(d, _)| d.memory.as_ref()) {
        Some(m) => parse_memory(m).map_err(|e| x_err("memory", e))?,
        None => settings.memory,
    };
    let vcpus = match x.and_then(|(d, _)| d.vcpus) {
        Some(n) => check_vcpus(n).map_err(|e| x_err("vcpus", e))?,
        None => settings.vcpus,
    };
    let volume_size = match x.and_then(|(d, _)| d.volume_size.as_ref()) {
        Some(m) => parse_memory(m).map_err(|e| x_err("volume_size", e))?,
        None => DEFAULT_VOLUME_SIZE,
    };
    Ok(Service {
        hostname: s.hostname.map(|h| h.value).unwrap_or_else(|| name.clone()),
        name,
        line,
        image,
        entrypoint,
        command,
        environment,
        depends_on,
        healthcheck,
        tmpfs,
        volumes,
        working_dir: s.working_dir.map(|w| w.value),
        user: s.user.map(|u| u.value.0),
        stop_grace_period,
        memory,
        vcpus,
        volume_size,
    })
}

/// Keeps the last value of each variable, in first-appearance order.
fn last_wins(entries: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in entries {
        if !values.contains_key(&k) {
            order.push(k.clone());
        }
        values.insert(k, v);
    }
    order
        .into_iter()
        .map(|k| {
            let v = values.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect()
}

fn healthcheck(
    ctx: &Ctx,
    field: &str,
    h: Spanned<raw::RawHealthcheck>,
) -> Result<Option<Healthcheck>, ComposeError> {
    let line = h.referenced.line();
    let h = h.value;
    if h.disable == Some(true) {
        return Ok(None);
    }
    let err = |f: &str, e: String| ctx.err(line, format!("{field}.{f}: {e}"));
    let test =
        match h.test {
            None => {
                return Err(err(
                    "test",
                    "missing: say what to run, e.g. [\"CMD\", \"pg_isready\"]".into(),
                ))
            }
            Some(StringOrList::String(cmd)) => vec!["/bin/sh".into(), "-c".into(), cmd],
            Some(StringOrList::List(list)) => match list.split_first() {
                Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
                Some((kind, [cmd])) if kind == "CMD-SHELL" => {
                    vec!["/bin/sh".into(), "-c".into(), cmd.clone()]
                }
                Some((kind, [])) if kind == "NONE" => return Ok(None),
                _ => return Err(err(
                    "test",
                    "write [\"CMD\", program, args…], [\"CMD-SHELL\", \"command\"] or [\"NONE\"]"
                        .into(),
                )),
            },
        };
    let dur = |name: &str, v: Option<String>, default: u64| -> Result<Duration, ComposeError> {
        v.map(|t| parse_duration(&t).map_err(|e| err(name, e)))
            .transpose()
            .map(|d| d.unwrap_or(Duration::from_secs(default)))
    };
    Ok(Some(Healthcheck {
        test,
        interval: dur("interval", h.interval, 30)?,
        timeout: dur("timeout", h.timeout, 30)?,
        retries: h.retries.unwrap_or(3),
        start_period: dur("start_period", h.start_period, 0)?,
    }))
}

fn volume(
    ctx: &Ctx,
    service: &str,
    index: usize,
    declared: &[String],
    v: Spanned<String>,
) -> Result<Volume, ComposeError> {
    let line = v.referenced.line();
    let field = format!("services.{service}.volumes[{index}]");
    let parts: Vec<&str> = v.value.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, mode] => (Some(*source), *target, Some(*mode)),
        _ => {
            return Err(ctx.err(
                line,
                format!("{field}: `{}` is not SOURCE:TARGET[:MODE]", v.value),
            ))
        }
    };
    if !target.starts_with('/') {
        return Err(ctx.err(
            line,
            format!("{field}: the target `{target}` must be an absolute path"),
        ));
    }
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => {
            return Err(ctx.err(line, format!("{field}: mode `{other}`; use `ro` or `rw`")))
        }
    };
    let name = match source {
        None => format!("{service}-anon-{index}"),
        Some(s) if s.starts_with('.') || s.starts_with('/') || s.starts_with('~') => {
            return Err(ctx.err(line, format!(
                "{field}: `{s}` is a bind mount of a host folder; a detvm run must not depend on the host, so copy the files into the image or use a named volume"
            )))
        }
        Some(s) if declared.iter().any(|d| d == s) => s.to_string(),
        Some(s) => return Err(ctx.err(line, format!("{field}: volume `{s}` is not declared under the top-level `volumes:`"))),
    };
    Ok(Volume {
        name,
        target: target.to_string(),
        read_only,
    })
}

/// Dependencies that cannot be satisfied: a cycle, or waiting for health that is never checked.
fn check_dependencies(ctx: &Ctx, services: &[Service]) -> Result<(), ComposeError> {
    let find = |name: &str| services.iter().find(|s| s.name == name);
    for s in services {
        for d in &s.depends_on {
            let target = find(&d.service).expect("checked while resolving");
            if d.condition == Condition::Healthy && target.healthcheck.is_none() {
                return Err(ctx.err(s.line, format!(
                    "services.{}.depends_on.{}: waits for `service_healthy` but `{}` has no healthcheck",
                    s.name, d.service, d.service
                )));
            }
        }
    }
    // Depth-first search for a cycle; services are few.
    fn visit<'a>(
        name: &'a str,
        services: &'a [Service],
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(pos) = path.iter().position(|p| *p == name) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(name);
            return Some(cycle);
        }
        if done.contains(&name) {
            return None;
        }
        path.push(name);
        let service = services.iter().find(|s| s.name == name)?;
        for d in &service.depends_on {
            if let Some(c) = visit(&d.service, services, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.push(name);
        None
    }
    let mut done = Vec::new();
    for s in services {
        if let Some(cycle) = visit(&s.name, services, &mut Vec::new(), &mut done) {
            return Err(ctx.err(
                s.line,
                format!("depends_on forms a cycle: {}", cycle.join(" -> ")),
            ));
        }
    }
    Ok(())
}

/// An env file: `KEY=value` lines, `#` comments, optional quotes and `export `.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, ComposeError> {
    let text = std::fs::read_to_string(path).map_err(|e| ComposeError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read env file: {e}"),
    })?;
    parse_env(path, &text)
}

/// [`read_env_file`] on text already read; `path` names the file in errors.
pub fn parse_env(path: &Path, text: &str) -> Result<Vec<(String, String)>, ComposeError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(ComposeError {
                file: path.to_path_buf(),
                line: i as u64 + 1,
                message: format!("`{line}` is not KEY=value"),
            });
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        out.push((key.trim().to_string(), value.to_string()));
    }
    Ok(out)
}

use std::path::Path;
use std::time::Duration;

use super::*;

fn parse_ok(text: &str) -> Compose {
    parse(Path::new("compose.yaml"), text, &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> ComposeError {
    parse(Path::new("compose.yaml"), text, &[]).expect_err("should be refused")
}

const TWO_SERVICES: &str = r#"
services:
  web:
    image: bank:1
    command: ["serve", "--port", "8080"]
    environment:
      MODE: test
      LEVEL: 3
    depends_on:
      db:
        condition: service_healthy
    x-detvm:
      memory: 512MiB
  db:
    image: etcd:3.4
    entrypoint: /usr/bin/etcd --name "db one"
    environment:
      - A=1
      - B=two=2
    healthcheck:
      test: ["CMD", "etcdctl", "endpoint", "health"]
      interval: 2s
      retries: 5
    volumes:
      - data:/var/lib/etcd
    user: 1000
x-detvm:
  seed: 7
  duration: 5m
  epoch: 2038-01-19T03:00:00Z
volumes:
  data:
"#;

#[test]
fn reads_the_fields_a_tested_system_uses() {
    let c = parse_ok(TWO_SERVICES);
    let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db", "web"], "sorted by name");
    let db = &c.services[0];
    let web = &c.services[1];
    assert_eq!(web.command.as_deref().unwrap(), ["serve", "--port", "8080"]);
    assert_eq!(
        db.entrypoint.as_deref().unwrap(),
        ["/usr/bin/etcd", "--name", "db one"],
        "a string is split into words as a shell would"
    );
    assert_eq!(
        web.environment,
        [("MODE".into(), "test".into()), ("LEVEL".into(), "3".into())]
    );
    assert_eq!(
        db.environment,
        [("A".into(), "1".into()), ("B".into(), "two=2".into())]
    );
    assert_eq!(
        web.depends_on,
        [Dependency {
            service: "db".into(),
            condition: Condition::Healthy
        }]
    );
    let h = db.healthcheck.as_ref().unwrap();
    assert_eq!(h.test, ["etcdctl", "endpoint", "health"]);
    assert_eq!(h.interval, Duration::from_secs(2));
    assert_eq!(h.retries, 5);
    assert_eq!(db.volumes[0].name, "data");
    assert_eq!(db.volumes[0].target, "/var/lib/etcd");
    assert_eq!(db.user.as_deref(), Some("1000"));
    assert_eq!(web.memory, 512 << 20);
    assert_eq!(db.memory, 256 << 20, "the default");
    assert_eq!(web.hostname, "web");
    assert_eq!(c.settings.seed, Some(7));
    assert_eq!(c.settings.duration, Some(Duration::from_secs(300)));
    assert_eq!(c.settings.epoch, Some(2_147_482_800));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let e = parse_err("services:\n  web:\n    image: a\n    imagee: b\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("unknown service field `imagee`"), "{e}");
    assert!(e.to_string().starts_with("compose.yaml:4:"), "{e}");
}

#[test]
fn unsupported_features_are_errors_with_the_fix() {
    let e = parse_err("services:\n  web:\n    image: a\n    build: .\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("`build` is not supported"), "{e}");
    assert!(e.message.contains("detvm image load"), "{e}");
    let e = parse_err("services:\n  web:\n    image: a\n    volumes: [\"./src:/src\"]\n");
    assert!(e.message.contains("bind mount"), "{e}");
    assert_eq!(e.line, 4, "{e}");
}

#[test]
fn tolerated_fields_warn_with_their_line() {
    let c = parse_ok("version: '3'\nservices:\n  web:\n    image: a\n    ports: [\"80:80\"]\n");
    let fields: Vec<_> = c
        .warnings
        .iter()
        .map(|w| (w.field.as_str(), w.line))
        .collect();
    assert_eq!(fields, [("version", 1), ("services.web.ports", 5)]);
    assert!(c.warnings[1].to_string().contains("compose.yaml:5"));
}

#[test]
fn extension_fields_and_anchors_are_accepted() {
    let c = parse_ok(
        "x-common: &common\n  image: base:1\n  environment: {A: '1'}\nservices:\n  a:\n    <<: *common\n    x-note: hi\n",
    );
    assert_eq!(c.services[0].image, "base:1");
    assert_eq!(c.services[0].environment, [("A".into(), "1".into())]);
}

#[test]
fn yaml_syntax_error_has_a_line() {
    let e = parse_err("services:\n  web:\n    image: [a\n    command: x\n");
    assert!(e.line >= 3, "{e}");
}

#[test]
fn depends_on_an_unknown_service() {
    let e =
        parse_err("services:\n  web:\n    image: a\n    depends_on: [dbb]\n  db:\n    image: b\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("unknown service `dbb`"), "{e}");
    assert!(e.message.contains("services: db, web"), "{e}");
}

#[test]
fn dependency_cycles_and_health_without_check() {
    let e = parse_err(
        "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n",
    );
    assert!(e.message.contains("cycle: a -> b -> a"), "{e}");
    let e = parse_err(
        "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: service_healthy}\n  b:\n    image: x\n",
    );
    assert!(e.message.contains("has no healthcheck"), "{e}");
}

#[test]
fn missing_image_and_bad_settings() {
    let e = parse_err("services:\n  web:\n    command: x\n");
    assert!(e.message.contains("has no `image:`"), "{e}");
    assert_eq!(e.line, 3, "{e}");
    let e = parse_err("services:\n  web:\n    image: a\nx-detvm:\n  duration: -5s\n");
    assert!(e.message.contains("x-detvm.duration"), "{e}");
    let e = parse_err("services:\n  web:\n    image: a\nx-detvm:\n  vcpus: 9\n");
    assert!(e.message.contains("x-detvm.vcpus"), "{e}");
    let e = parse_err("services:\n  web:\n    image: a\nx-detvm:\n  sed: 1\n");
    assert!(e.message.contains("sed"), "{e}");
    let e = parse_err("services: {}\n");
    assert!(e.message.contains("empty"), "{e}");
}

#[test]
fn interpolation_from_dotenv_only() {
    let vars = [("TAG".to_string(), "2".to_string())];
    let c = parse(
        Path::new("c.yaml"),
        "services:\n  web:\n    image: app:${TAG}\n    command: sh -c 'echo $$HOME ${MISSING:-dflt}'\n    environment: [X=${NOPE}]\n",
        &vars,
    )
    .unwrap();
    let web = &c.services[0];
    assert_eq!(web.image, "app:2");
    assert_eq!(
        web.command.as_deref().unwrap(),
        ["sh", "-c", "echo $HOME dflt"]
    );
    assert_eq!(web.environment, [("X".into(), String::new())]);
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].line, 5);
    let e = parse(
        Path::new("c.yaml"),
        "services:\n  w:\n    image: ${REQ:?set it}\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("set it"), "{e}");
}

#[test]
fn env_file_is_read_relative_to_the_compose_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.env"), "# c\nA=1\nexport B=\"two\"\n").unwrap();
    let path = dir.path().join("compose.yaml");
    std::fs::write(
        &path,
        "services:\n  w:\n    image: x\n    env_file: app.env\n    environment: {B: three}\n",
    )
    .unwrap();
    let c = load(&path).unwrap();
    assert_eq!(
        c.services[0].environment,
        [("A".into(), "1".into()), ("B".into(), "three".into())]
    );
    std::fs::write(
        &path,
        "services:\n  w:\n    image: x\n    env_file: nope.env\n",
    )
    .unwrap();
    let e = load(&path).unwrap_err();
    assert!(e.to_string().contains("nope.env"), "{e}");
}

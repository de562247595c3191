//! The deployment in `deploy/` agrees with the binary it runs: every `SMS_*` variable
//! of the stack is a real configuration key (deploy/gateway.toml loads and validates
//! with the stack's environment applied), the published port, the health probes and
//! the Consul watches use the configured `listen` port, every secret and config a
//! service names exists (and secrets are never inline), the gateway and the reference
//! services run the same image, every command line in the stack and the Dockerfile
//! is accepted by the binary, Prometheus scrapes every gateway task and alerts through
//! the stack's Alertmanager, and the stack test (deploy/test/stack-test.sh) deploys
//! this very file with only image, port and config-name variables changed.
//!
//! `deploy/check.sh` adds `docker stack config`, which checks the file against Docker's
//! own schema; this test needs no Docker.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use sms_gateway::config::{Config, DiscoveryMode};
use sms_gateway::upstream::Service;

/// What a `FILE__<VAR>` variable stands for when the config is loaded here: the image's
/// entry point replaces it by the secret's contents, which this test cannot read.
const SECRET_PLACEHOLDER: &str = "value-of-a-docker-secret-0123456789";

/// The placeholder of the webhook token in consul/watches.json.
const WEBHOOK_PLACEHOLDER: &str = "@WEBHOOK_TOKEN@";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compose interpolation as `docker stack deploy` does it with none of the variables
/// set: `${VAR:-default}` → default, `$$` → `$`. A variable without a default is a
/// defect (docker would silently use an empty string).
fn interpolate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').expect("unclosed ${ in stack.yml");
            let expression = &body[..end];
            assert!(
                !expression.contains(":?") && !expression.contains('?'),
                "stack.yml requires variable {expression}: the check would need it set"
            );
            let (_, default) = expression.split_once(":-").unwrap_or_else(|| {
                panic!("${{{expression}}} in stack.yml has no default: docker would use \"\"")
            });
            out.push_str(default);
            rest = &body[end + 1..];
        } else {
            panic!("a bare $ in stack.yml (write $$ for a literal $): {rest:.40}");
        }
    }
    out.push_str(rest);
    out
}

struct Stack {
    root: Value,
}

impl Stack {
    fn load() -> Self {
        let text = interpolate(&read("stack.yml"));
        let root: Value = serde_norway::from_str(&text).expect("deploy/stack.yml is YAML");
        Self { root }
    }

    fn services(&self) -> &serde_json::Map<String, Value> {
        self.root["services"].as_object().expect("services")
    }

    fn service(&self, name: &str) -> &Value {
        self.services()
            .get(name)
            .unwrap_or_else(|| panic!("service {name} is missing"))
    }

    /// A service's environment, from either compose form (mapping or `K=V` list).
    fn environment(&self, name: &str) -> BTreeMap<String, String> {
        let scalar = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        match &self.service(name)["environment"] {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    let text = item.as_str().expect("K=V");
                    let (k, v) = text.split_once('=').unwrap_or((text, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
            Value::Null => BTreeMap::new(),
            other => panic!("{name}: environment is {other}"),
        }
    }

    /// `(source, target)` of a service's secrets or configs; a secret's default target
    /// is `/run/secrets/<source>`.
    fn mounts(&self, service: &str, kind: &str) -> Vec<(String, String)> {
        let Some(items) = self.service(service)[kind].as_array() else {
            return Vec::new();
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(source) => (source.clone(), format!("/run/secrets/{source}")),
                Value::Object(map) => {
                    let source = map["source"].as_str().expect("source").to_owned();
                    let target = match map.get("target").and_then(Value::as_str) {
                        Some(target) if target.starts_with('/') => target.to_owned(),
                        Some(target) => format!("/run/secrets/{target}"),
                        None if kind == "secrets" => format!("/run/secrets/{source}"),
                        None => format!("/{source}"),
                    };
                    (source, target)
                }
                other => panic!("{service}: {kind} entry {other}"),
            })
            .collect()
    }

    /// Where `service` mounts the docker config `source`.
    fn config_target(&self, service: &str, source: &str) -> String {
        self.mounts(service, "configs")
            .into_iter()
            .find(|(s, _)| s == source)
            .map(|(_, target)| target)
            .unwrap_or_else(|| panic!("config {source} is not mounted into {service}"))
    }

    /// The service's command as a list of arguments.
    fn command(&self, service: &str) -> Vec<String> {
        strings(&self.service(service)["command"])
    }

    /// Target ports of the service's published ports (long or short syntax).
    fn target_ports(&self, service: &str) -> Vec<u16> {
        let Some(ports) = self.service(service)["ports"].as_array() else {
            return Vec::new();
        };
        ports
            .iter()
            .map(|port| match port {
                Value::Object(map) => map["target"].as_u64().expect("target") as u16,
                Value::String(text) => {
                    let target = text.rsplit(':').next().unwrap_or(text);
                    let target = target.split('/').next().unwrap_or(target);
                    target.parse().expect("port")
                }
                Value::Number(n) => n.as_u64().expect("port") as u16,
                other => panic!("{service}: port {other}"),
            })
            .collect()
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|v| v.as_str().expect("string argument").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The gateway's environment as the binary sees it: `SMS_*` as given, `FILE__SMS_*` as
/// the variable the entry point sets from the secret file.
fn gateway_env(stack: &Stack) -> BTreeMap<String, String> {
    let secrets = stack.mounts("gateway", "secrets");
    let mut env = BTreeMap::new();
    for (name, value) in stack.environment("gateway") {
        if let Some(var) = name.strip_prefix("FILE__") {
            assert!(
                var.starts_with("SMS_"),
                "{name}: only SMS_* variables configure the gateway"
            );
            assert!(
                secrets.iter().any(|(_, target)| *target == value),
                "{name}={value}: not a secret mounted into the gateway"
            );
            env.insert(var.to_owned(), SECRET_PLACEHOLDER.to_owned());
        } else {
            assert!(
                name.starts_with("SMS_"),
                "gateway variable {name} configures nothing (not SMS_* or FILE__SMS_*)"
            );
            env.insert(name, value);
        }
    }
    env
}

fn gateway_config(stack: &Stack) -> Config {
    Config::from_toml(&read("gateway.toml"), &gateway_env(stack)).unwrap_or_else(|e| {
        panic!("deploy/gateway.toml with the stack's gateway environment is invalid: {e}")
    })
}

/// `http://host:port...` → (host, port).
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':').expect("url with a port");
    (host.to_owned(), port.parse().expect("port"))
}

/// Runs the built binary with `args` (blocking).
fn run_binary(args: &[String]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sms-gateway"))
        .args(args)
        .output()
        .expect("run sms-gateway")
}

/// The binary accepts `args` (checked with `--help` appended: clap rejects an unknown
/// subcommand, flag or malformed value before it prints help).
fn assert_cli_accepts(what: &str, args: &[String]) {
    let mut with_help = args.to_vec();
    with_help.push("--help".to_owned());
    let output = run_binary(&with_help);
    assert!(
        output.status.success(),
        "{what}: sms-gateway rejects {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_stack_runs_the_documented_services() {
    let stack = Stack::load();
    let names: BTreeSet<&str> = stack.services().keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "alertmanager",
            "consul",
            "edge",
            "gateway",
            "jaeger",
            "prometheus",
            "redis",
            "reference"
        ])
    );
    let gateway = &stack.service("gateway")["deploy"];
    assert_eq!(gateway["replicas"], 2);
    assert_eq!(gateway["update_config"]["order"], "start-first");
    assert!(gateway["resources"]["limits"]["memory"].is_string());
    assert!(gateway["resources"]["limits"]["cpus"].is_string());
    assert_eq!(stack.service("reference")["deploy"]["replicas"], 2);
    assert_eq!(stack.root["networks"]["sms"]["driver"], "overlay");
    for (name, service) in stack.services() {
        assert_eq!(
            strings(&service["networks"]),
            ["sms"],
            "{name} is not (only) on the sms network"
        );
        assert!(
            service["deploy"]["resources"]["limits"].is_object(),
            "{name} has no resource limits"
        );
        // Names resolve to the tasks themselves: the edge balances and retries over the
        // gateway tasks, and no virtual IP (IPVS) is needed.
        assert_eq!(
            service["deploy"]["endpoint_mode"], "dnsrr",
            "{name}: endpoint_mode"
        );
        // A dnsrr service cannot publish through the routing mesh.
        for port in service["ports"].as_array().into_iter().flatten() {
            assert_eq!(port["mode"], "host", "{name}: port {port}");
        }
    }
}

#[test]
fn every_gateway_variable_is_a_real_config_key_and_the_config_is_valid() {
    let stack = Stack::load();
    let env = gateway_env(&stack);
    assert!(!env.is_empty());
    // Each variable on its own too, so a failure names the culprit (other errors, such
    // as the missing JWT secret, are expected here).
    for (name, value) in &env {
        let one = BTreeMap::from([(name.clone(), value.clone())]);
        if let Err(e) = Config::from_toml(&read("gateway.toml"), &one) {
            let e = e.to_string();
            assert!(
                !e.contains("unknown field"),
                "{name} is not a configuration key: {e}"
            );
        }
    }
    let config = gateway_config(&stack);
    assert_eq!(config.discovery.mode, DiscoveryMode::Consul);
    assert!(
        config.consul.webhook_token.is_some(),
        "the webhook the Consul watches call must be on"
    );
    assert!(
        config.jwt.secret.is_none(),
        "the JWT secret must come from a file"
    );
}

#[test]
fn secret_files_are_docker_secrets_of_the_service() {
    let stack = Stack::load();
    let config = gateway_config(&stack);
    let targets: Vec<String> = stack
        .mounts("gateway", "secrets")
        .into_iter()
        .map(|(_, target)| target)
        .collect();
    let files = [
        ("jwt.secret_file", config.jwt.secret_file.clone()),
        ("consul.token_file", config.consul.token_file.clone()),
    ];
    for (key, file) in files {
        if let Some(file) = file {
            let file = file.to_string_lossy().into_owned();
            assert!(
                targets.contains(&file),
                "{key} = {file} is not a secret mounted into the gateway ({targets:?})"
            );
        }
    }
    assert!(config.jwt.secret_file.is_some());
}

#[test]
fn every_referenced_secret_and_config_exists_and_secrets_are_external() {
    let stack = Stack::load();
    for kind in ["secrets", "configs"] {
        let declared = stack.root[kind].as_object().expect(kind);
        let mut used = BTreeSet::new();
        for name in stack.services().keys() {
            for (source, _) in stack.mounts(name, kind) {
                assert!(
                    declared.contains_key(&source),
                    "{name} uses {kind} {source}, which the stack does not declare"
                );
                used.insert(source);
            }
        }
        for (source, definition) in declared {
            assert!(
                used.contains(source),
                "{kind} {source} is declared but unused"
            );
            if kind == "secrets" {
                // A secret's value never comes from the repository or the stack file.
                assert_eq!(
                    definition["external"], true,
                    "secret {source} must be external (created with docker secret create)"
                );
            } else {
                let file = definition["file"].as_str().expect("config file");
                assert!(
                    deploy_dir().join(file).is_file(),
                    "config {source}: {file} does not exist next to stack.yml"
                );
            }
        }
    }
    // Environment values never hold secrets themselves: only file paths.
    for name in stack.services().keys() {
        for (var, value) in stack.environment(name) {
            let upper = var.to_ascii_uppercase();
            if ["SECRET", "TOKEN", "PASSWORD"]
                .iter()
                .any(|word| upper.contains(word))
            {
                assert!(
                    value.starts_with("/run/secrets/"),
                    "{name}: {var} must name a secret file, not hold a value"
                );
            }
        }
    }
}

#[test]
fn ports_and_probes_use_the_configured_listen_address() {
    let stack = Stack::load();
    let config = gateway_config(&stack);
    let listen: SocketAddr = config.listen;
    assert!(
        listen.ip().is_unspecified(),
        "the gateway must listen on every interface of its container, not {listen}"
    );
    // Clients reach the gateway through the edge only.
    assert_eq!(stack.target_ports("gateway"), [0u16; 0]);

    let probe = strings(&stack.service("gateway")["healthcheck"]["test"]);
    assert_eq!(probe.first().map(String::as_str), Some("CMD"));
    let url_at = probe.iter().position(|a| a == "--url").expect("--url");
    let url = &probe[url_at + 1];
    assert_eq!(host_port(url), ("127.0.0.1".to_owned(), listen.port()));
    assert!(url.ends_with("/ping"), "{url}");

    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!("EXPOSE {}", listen.port())),
        "Dockerfile EXPOSE"
    );
    assert!(
        dockerfile.contains(&format!("\"--url\", \"{url}\"")),
        "the image's HEALTHCHECK probes another URL than the stack's ({url})"
    );

    // Consul, Redis and Jaeger are services of the stack at the configured ports.
    let (host, port) = host_port(&config.consul.address);
    assert_eq!(host, "consul");
    assert_eq!(stack.target_ports("consul"), [port]);
    let redis = config.redis.url.as_deref().expect("redis.url");
    let (host, port) = host_port(redis);
    assert_eq!((host.as_str(), port), ("redis", 6379));
    let otlp = config
        .telemetry
        .otlp_endpoint
        .as_deref()
        .expect("telemetry.otlp_endpoint");
    let (host, port) = host_port(otlp);
    assert_eq!((host.as_str(), port), ("jaeger", 4317));
    assert_eq!(
        stack.environment("jaeger").get("COLLECTOR_OTLP_ENABLED"),
        Some(&"true".to_owned())
    );
}

#[test]
fn the_gateway_and_the_reference_services_run_the_same_image_and_real_commands() {
    let stack = Stack::load();
    let config = gateway_config(&stack);
    let image = stack.service("gateway")["image"].as_str().expect("image");
    assert_eq!(stack.service("reference")["image"], image);
    assert!(image.starts_with("sms-gateway:"), "{image}");

    // The gateway serves the TOML mounted from the gateway_toml config.
    let command = stack.command("gateway");
    assert_cli_accepts("gateway command", &command);
    assert_eq!(command[0], "serve");
    let config_at = command
        .iter()
        .position(|a| a == "--config")
        .expect("--config");
    let gateway_toml = stack
        .mounts("gateway", "configs")
        .into_iter()
        .find(|(source, _)| source == "gateway_toml")
        .expect("gateway_toml mounted");
    assert_eq!(command[config_at + 1], gateway_toml.1);
    assert_eq!(
        stack.root["configs"]["gateway_toml"]["file"],
        "./gateway.toml"
    );

    // The reference services register in the Consul the gateway watches.
    let command = stack.command("reference");
    assert_cli_accepts("reference command", &command);
    assert_eq!(command[0], "services");
    let consul_at = command
        .iter()
        .position(|a| a == "--consul")
        .expect("--consul");
    assert_eq!(command[consul_at + 1], config.consul.address);
    let host_at = command.iter().position(|a| a == "--host").expect("--host");
    assert_eq!(command[host_at + 1], "0.0.0.0");
    // Their env may only hold what `services` reads.
    for var in stack.environment("reference").keys() {
        assert!(
            ["SMS_CONSUL_TOKEN", "FILE__SMS_CONSUL_TOKEN"].contains(&var.as_str()),
            "reference: {var} is read by nothing"
        );
    }

    let probe = strings(&stack.service("gateway")["healthcheck"]["test"]);
    assert_eq!(probe[..2], ["CMD", "sms-gateway"]);
    assert_cli_accepts("gateway healthcheck", &probe[2..]);
}

/// The exec-form arguments (`CMD ["a", "b"]`) of the first Dockerfile instruction that
/// starts with `instruction`, continuation lines joined.
fn exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(instruction))
        .unwrap_or_else(|| panic!("Dockerfile has no {instruction}"));
    let cmd = line.find("CMD [").expect("exec-form CMD");
    serde_json::from_str(&line[cmd + 4..]).expect("JSON array")
}

#[test]
fn the_dockerfile_builds_a_small_non_root_image_that_runs_the_stack_commands() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked"));
    // A `# syntax=` line would make BuildKit pull a frontend image: no offline build.
    assert!(
        !dockerfile
            .lines()
            .any(|line| line.trim_start().starts_with("# syntax")),
        "no syntax directive"
    );
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages,
        [
            "FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build",
            "FROM ${RUNTIME_BASE} AS runtime-base",
            "FROM runtime-base AS prebuilt",
            "FROM runtime-base AS runtime",
        ],
        "build, the runtime without the binary, and the two ways to add it (the last, \
         the build stage's binary, is the default target)"
    );
    let base = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ARG RUNTIME_BASE="))
        .expect("ARG RUNTIME_BASE");
    assert_eq!(base, "debian:${DEBIAN_RELEASE}-slim");
    assert!(
        dockerfile.contains("COPY --chmod=0755 prebuilt/sms-gateway /usr/local/bin/sms-gateway")
    );
    assert!(dockerfile.contains("COPY --from=build /out/sms-gateway /usr/local/bin/sms-gateway"));
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("USER");
    assert_eq!(user, "${UID}:${UID}");
    let uid = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ARG UID="))
        .expect("ARG UID");
    assert_ne!(uid, "0", "the image must not run as root");
    // The gateway's secrets are readable by exactly that user.
    let stack = Stack::load();
    for secret in stack.service("gateway")["secrets"]
        .as_array()
        .expect("secrets")
    {
        assert_eq!(secret["uid"], uid, "{secret}");
    }
    for forbidden in ["SMS_JWT__SECRET=", "SMS_JWT__SECRET ", "WEBHOOK_TOKEN="] {
        assert!(
            !dockerfile.contains(forbidden),
            "a secret in the Dockerfile"
        );
    }
    // CMD and the HEALTHCHECK command are valid for the binary.
    let cmd = exec_form(&dockerfile, "CMD [");
    assert_cli_accepts("Dockerfile CMD", &cmd);
    assert_eq!(cmd, stack.command("gateway"));
    let probe = exec_form(&dockerfile, "HEALTHCHECK ");
    assert_eq!(probe[0], "sms-gateway");
    assert_cli_accepts("Dockerfile HEALTHCHECK", &probe[1..]);
    // The entry point the image copies exists and is a POSIX shell script.
    let entrypoint = read("docker-entrypoint.sh");
    assert!(entrypoint.starts_with("#!/bin/sh\n"));
    assert!(entrypoint.contains("exec sms-gateway \"$@\""));
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))
            .expect(".dockerignore");
    assert!(ignore.lines().any(|line| line.trim() == "target/"));
    assert!(ignore.contains("!deploy/docker-entrypoint.sh"));
    // The prebuilt target's binary is part of the context.
    assert!(
        !ignore
            .lines()
            .any(|line| line.trim().starts_with("prebuilt"))
    );
}

#[test]
fn consul_watches_call_the_webhook_for_every_backend_with_the_shared_token() {
    let stack = Stack::load();
    let config = gateway_config(&stack);
    let watches: Value = serde_json::from_str(&read("consul/watches.json")).expect("JSON");
    let watches = watches["watches"].as_array().expect("watches");
    let expected: BTreeSet<String> = Service::ALL
        .iter()
        .map(|service| {
            config
                .upstream
                .services
                .get(service)
                .and_then(|s| s.consul_name.clone())
                .unwrap_or_else(|| service.consul_name().to_owned())
        })
        .collect();
    let mut watched = BTreeSet::new();
    for watch in watches {
        let name = watch["service"].as_str().expect("service").to_owned();
        assert_eq!(watch["type"], "service");
        assert_eq!(watch["handler_type"], "http");
        let handler = &watch["http_handler_config"];
        assert_eq!(handler["method"], "POST");
        assert_eq!(
            handler["path"],
            format!(
                "http://gateway:{}/events/types/consul-change?service={name}",
                config.listen.port()
            )
        );
        assert_eq!(
            handler["header"]["X-Gateway-Token"],
            serde_json::json!([WEBHOOK_PLACEHOLDER])
        );
        watched.insert(name);
    }
    assert_eq!(watched, expected);

    // The consul task fills the placeholder from the secret the gateway reads its
    // webhook token from, in the file the watches config is mounted at.
    let gateway_token = stack
        .environment("gateway")
        .get("FILE__SMS_CONSUL__WEBHOOK_TOKEN")
        .cloned()
        .expect("the gateway reads its webhook token from a secret");
    let script = stack.command("consul").join("\n");
    assert!(script.contains(&format!("cat {gateway_token}")), "{script}");
    assert!(
        stack
            .mounts("consul", "secrets")
            .iter()
            .any(|(_, target)| *target == gateway_token)
    );
    let (_, watches_target) = stack
        .mounts("consul", "configs")
        .into_iter()
        .find(|(source, _)| source == "consul_watches")
        .expect("consul_watches mounted");
    assert!(
        script.contains(&format!("s/{WEBHOOK_PLACEHOLDER}/")) && script.contains(&watches_target),
        "{script}"
    );
    assert!(script.contains("/consul/config/watches.json"));
    assert!(script.contains("exec docker-entrypoint.sh agent"));
}

/// The binary's `healthcheck` against a real gateway: 0 on `/ping`, non-zero on a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_command_probes_a_running_gateway() {
    let gateway = support::Gateway::start().await;
    let probe = |path: &str| {
        let args = vec![
            "healthcheck".to_owned(),
            "--url".to_owned(),
            gateway.url(path),
            "--timeout".to_owned(),
            "5s".to_owned(),
        ];
        tokio::task::spawn_blocking(move || run_binary(&args))
    };
    let healthy = probe("/ping").await.expect("probe");
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let missing = probe("/no-such-route").await.expect("probe");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
}

/// The consul task's start-up script, run by `sh` with its paths moved into a temporary
/// directory and `docker-entrypoint.sh` replaced: the watches it writes carry the
/// secret's token, and a token that would break the substitution is refused.
#[test]
fn the_consul_task_renders_the_watches_with_the_secret_token() {
    let stack = Stack::load();
    let command = stack.command("consul");
    assert_eq!(command.len(), 1, "one sh -c script");
    assert_eq!(
        strings(&stack.service("consul")["entrypoint"]),
        ["/bin/sh", "-c"]
    );
    let dir = std::env::temp_dir().join(format!("sms-deploy-check-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("config")).expect("temp dir");
    let (_, watches_target) = stack
        .mounts("consul", "configs")
        .into_iter()
        .find(|(source, _)| source == "consul_watches")
        .expect("consul_watches mounted");
    let template = dir.join("watches.template.json");
    std::fs::copy(deploy_dir().join("consul/watches.json"), &template).expect("copy");
    let secret = dir.join("token");
    let rendered = dir.join("config/watches.json");
    let script = command[0]
        .replace("/run/secrets/sms_webhook_token", &secret.to_string_lossy())
        .replace(&watches_target, &template.to_string_lossy())
        .replace("/consul/config/watches.json", &rendered.to_string_lossy())
        .replace("chown consul:consul", "true")
        .replace("exec docker-entrypoint.sh agent", "exit 0");
    let run = |token: &str| {
        std::fs::write(&secret, token).expect("write token");
        let _ = std::fs::remove_file(&rendered);
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("run sh")
    };

    let token = "0123456789abcdef0123456789abcdef";
    let output = run(&format!("{token}\n"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&rendered).expect("rendered watches");
    assert!(!text.contains(WEBHOOK_PLACEHOLDER));
    let watches: Value = serde_json::from_str(&text).expect("rendered JSON");
    for watch in watches["watches"].as_array().expect("watches") {
        assert_eq!(
            watch["http_handler_config"]["header"]["X-Gateway-Token"],
            serde_json::json!([token])
        );
    }
    for bad in ["", "a/b", "a&b", "with space"] {
        let output = run(bad);
        assert!(!output.status.success(), "token {bad:?} accepted");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The edge publishes the entry port in host mode (the client's address survives),
/// forwards to the gateway's `listen` port with the client address in the header the
/// guard reads, and the guard trusts that header from the stack's network only.
#[test]
fn the_edge_forwards_the_client_address_that_the_guard_trusts() {
    let stack = Stack::load();
    let config = gateway_config(&stack);
    let edge = stack.service("edge");
    assert_eq!(edge["deploy"]["mode"], "global");
    let ports = edge["ports"].as_array().expect("edge ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(
        ports[0]["mode"], "host",
        "the routing mesh would hide the client"
    );
    let entry = ports[0]["target"].as_u64().expect("target");

    let (_, target) = stack
        .mounts("edge", "configs")
        .into_iter()
        .find(|(source, _)| source == "edge_nginx")
        .expect("edge_nginx mounted");
    assert_eq!(target, "/etc/nginx/nginx.conf");
    assert_eq!(
        stack.root["configs"]["edge_nginx"]["file"],
        "./edge/nginx.conf"
    );
    let nginx: Vec<String> = read("edge/nginx.conf")
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    let has = |directive: &str| nginx.iter().any(|line| line == directive);
    assert!(has(&format!("listen {entry};")), "{nginx:#?}");
    assert!(has(&format!(
        "set $gateway http://gateway:{};",
        config.listen.port()
    )));
    assert!(has("proxy_pass $gateway;"));
    assert!(has("proxy_set_header X-Forwarded-For $remote_addr;"));
    // A gateway task that is gone or stopping: the request goes to another one.
    assert!(has("proxy_next_upstream error timeout;"));
    assert!(
        nginx
            .iter()
            .any(|line| line.starts_with("resolver 127.0.0.11 "))
    );
    // The gateway's body limit (and its 413 envelope) applies, not nginx's 1 MiB.
    assert!(has("client_max_body_size 0;"));
    // Metrics and the Consul webhook are for the stack's network only.
    assert!(has("location = /metrics {"));
    assert!(has("location /events/ {"));

    use sms_gateway::guard::config::ForwardedHeader;
    assert_eq!(
        config.guard.forwarded_header,
        ForwardedHeader::XForwardedFor
    );
    let subnets: Vec<String> = stack.root["networks"]["sms"]["ipam"]["config"]
        .as_array()
        .expect("the sms network has a pinned subnet")
        .iter()
        .map(|c| c["subnet"].as_str().expect("subnet").to_owned())
        .collect();
    let trusted: Vec<String> = config
        .guard
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        trusted, subnets,
        "guard.trusted_proxies must be the stack's network"
    );
    assert_ne!(
        stack.root["networks"]["sms"]["attachable"], true,
        "a trusted network must not let other containers join"
    );
}

/// `${SMS_<NAME>_IMAGE:-<public image>}` of every service but the gateway's own image.
fn image_variable(service: &str) -> String {
    format!("SMS_{}_IMAGE", service.to_ascii_uppercase())
}

/// The stack test runs this very file: the only differences are compose variables (the
/// images of the other parts, the edge port, the config names), each of which has the
/// public default, and every substituted image is a target of deploy/test/Dockerfile.
#[test]
fn the_stack_test_deploys_the_shipped_stack_with_local_images_only() {
    let raw = read("stack.yml");
    let stack = Stack::load();
    let test_dockerfile = read("test/Dockerfile");
    let script = read("test/stack-test.sh");
    assert!(script.contains("docker stack deploy --resolve-image never -c deploy/stack.yml"));
    for name in stack.services().keys() {
        if name == "gateway" || name == "reference" {
            continue;
        }
        let variable = image_variable(name);
        let line = raw
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("image:") && line.contains(&variable))
            .unwrap_or_else(|| panic!("{name}: image is not ${{{variable}:-...}}"));
        let public = line
            .split_once(":-")
            .and_then(|(_, rest)| rest.strip_suffix('}'))
            .expect("default");
        assert_eq!(stack.service(name)["image"], public);
        assert!(
            !public.starts_with("sms-"),
            "{name}: the default must be the public image"
        );
        assert!(
            script.contains(&format!("{variable}=sms-test/{name}:local")),
            "the stack test does not substitute {name}"
        );
        assert!(
            test_dockerfile.contains(&format!(" AS {name}\n")),
            "deploy/test/Dockerfile has no target {name}"
        );
    }
    assert_eq!(stack.target_ports("edge"), [8080]);
    assert_eq!(
        stack.service("edge")["ports"][0]["published"],
        8080,
        "clients' port by default"
    );
}

/// Prometheus scrapes every gateway task on the admin port, evaluates the rule file the
/// stack mounts, and sends alerts to the stack's Alertmanager.
#[test]
fn prometheus_scrapes_every_gateway_task_and_alerts_through_alertmanager() {
    let stack = Stack::load();
    let config: Value =
        serde_norway::from_str(&read("prometheus/prometheus.yml")).expect("prometheus.yml");
    let job = config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|job| job["job_name"] == "sms-gateway")
        .expect("the sms-gateway job");
    assert_eq!(job["metrics_path"], "/metrics");
    let sd = &job["dns_sd_configs"][0];
    // One target per task, not the service's virtual IP.
    assert_eq!(sd["names"], serde_json::json!(["tasks.gateway"]));
    assert_eq!(sd["type"], "A");
    // The admin listener's default port (`admin.listen`), not the public one.
    assert_eq!(sd["port"], 9464);

    let target_of = |source: &str| stack.config_target("prometheus", source);
    let command = stack.command("prometheus");
    assert!(command.contains(&format!("--config.file={}", target_of("prometheus_yml"))));
    let rule_files = strings(&config["rule_files"]);
    assert_eq!(rule_files, [target_of("prometheus_alerts")]);
    assert_eq!(
        stack.root["configs"]["prometheus_alerts"]["file"],
        "./prometheus/alerts.yml"
    );
    let rules: Value = serde_norway::from_str(&read("prometheus/alerts.yml")).expect("alerts.yml");
    let groups = rules["groups"].as_array().expect("rule groups");
    assert!(
        groups
            .iter()
            .all(|g| g["rules"].as_array().is_some_and(|r| !r.is_empty()))
    );

    let alertmanagers = &config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"];
    assert_eq!(alertmanagers, &serde_json::json!(["alertmanager:9093"]));
    assert_eq!(stack.target_ports("alertmanager"), [9093]);
    let am_target = stack.config_target("alertmanager", "alertmanager_yml");
    assert!(
        stack
            .command("alertmanager")
            .contains(&format!("--config.file={am_target}"))
    );
    let am: Value =
        serde_norway::from_str(&read("alertmanager/alertmanager.yml")).expect("alertmanager.yml");
    let receiver = am["route"]["receiver"].as_str().expect("route.receiver");
    assert!(
        am["receivers"]
            .as_array()
            .expect("receivers")
            .iter()
            .any(|r| r["name"] == receiver)
    );
}

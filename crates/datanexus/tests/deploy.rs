//! The deployment files run the real binary with arguments and environment it accepts:
//! every Data Nexus container of the compose stacks and Kubernetes manifests, the
//! Dockerfile's command and health check, and the systemd unit's `ExecStart` are run
//! with `serve --check-config` (or their own command) against this build.
//!
//! YAML is read with Python's PyYAML (installed by `.ci/run`), the repository's other
//! test tool language.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Where the images and the package put the configuration file…
const CONFIG_PATH: &str = "/etc/datanexus/datanexus.toml";
/// …and which file of the repository that is.
const INSTALLED_CONFIG: &str = "deploy/datanexus.toml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The YAML documents of `path`, as JSON.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Compose's `${VAR:-default}` and `${VAR}` interpolation, with an empty environment.
fn interpolate(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let inner = &rest[start + 2..end];
        if let Some((_, default)) = inner.split_once(":-") {
            out.push_str(default);
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The `ENV` settings of the Dockerfile's final stage.
fn dockerfile_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .rev()
        .find(|l| l.starts_with("ENV "))
        .expect("an ENV line");
    line["ENV ".len()..]
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Runs the binary with `args` (the config path mapped to `config`) and only `env`.
fn run(args: &[String], env: &[(String, String)], config: &Path) -> Output {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a == CONFIG_PATH {
                config.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    Command::new(env!("CARGO_BIN_EXE_datanexus"))
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `serve … --check-config` must pass and report `role`.
fn assert_serve_accepts(what: &str, args: &[String], env: &[(String, String)], config: &Path) {
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "{what}: {args:?}"
    );
    let mut args = args.to_vec();
    args.push("--check-config".into());
    let out = run(&args, env, config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: `datanexus {}` with {env:?} was refused: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("configuration is valid"),
        "{what}: {stdout}"
    );
    if let Some(i) = args.iter().position(|a| a == "--role") {
        assert!(
            stdout.contains(&format!("role={}", args[i + 1])),
            "{what}: {stdout}"
        );
    }
}

/// A non-serve command (a probe) must parse: it may fail to reach a server (exit 1),
/// but never be a usage error (exit 2).
fn assert_command_parses(what: &str, args: &[String], env: &[(String, String)]) {
    let out = run(args, env, Path::new(CONFIG_PATH));
    assert_ne!(
        out.status.code(),
        Some(2),
        "{what}: `datanexus {}` is not a valid command line: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| interpolate(s.as_str().unwrap())).collect())
        .unwrap_or_default()
}

#[test]
fn every_compose_service_runs_the_binary_with_arguments_it_accepts() {
    let config = repo().join(INSTALLED_CONFIG);
    let image_env = dockerfile_env();
    for file in ["single.yml", "redis.yml", "kafka.yml"] {
        let path = repo().join("deploy/compose").join(file);
        let doc = yaml_documents(&path).remove(0);
        let services = doc["services"].as_object().unwrap();
        let mut checked = 0;
        for (name, service) in services {
            if service["image"] != "datanexus:latest" {
                continue;
            }
            let mut env = image_env.clone();
            let vars: BTreeMap<String, String> = match &service["environment"] {
                Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        (k.clone(), interpolate(&v))
                    })
                    .collect(),
                Value::Null => BTreeMap::new(),
                other => panic!("{file} {name}: environment as a map, not {other}"),
            };
            env.retain(|(k, _)| !vars.contains_key(k));
            env.extend(vars);
            let args = strings(&service["command"]);
            assert_serve_accepts(&format!("{file} {name}"), &args, &env, &config);
            checked += 1;
        }
        assert!(checked > 0, "{file}: no datanexus service");
    }
}

#[test]
fn every_kubernetes_workload_runs_the_binary_with_arguments_it_accepts() {
    let dir = repo().join("deploy/k8s");
    let kustomization = yaml_documents(&dir.join("kustomization.yaml")).remove(0);
    let mut docs = Vec::new();
    for file in strings(&kustomization["resources"]) {
        docs.extend(yaml_documents(&dir.join(file)));
    }
    let of_kind = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    let config_map = of_kind("ConfigMap").next().expect("a ConfigMap");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("datanexus.toml");
    std::fs::write(
        &config,
        config_map["data"]["datanexus.toml"].as_str().unwrap(),
    )
    .unwrap();
    let secret = of_kind("Secret").next().expect("a Secret");
    let mut checked = 0;
    for workload in of_kind("Deployment").chain(of_kind("StatefulSet")) {
        let name = workload["metadata"]["name"].as_str().unwrap();
        for container in workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
        {
            if container["image"] != "datanexus:latest" {
                continue;
            }
            let mut env = dockerfile_env();
            for from in container["envFrom"].as_array().into_iter().flatten() {
                assert_eq!(
                    from["secretRef"]["name"], secret["metadata"]["name"],
                    "{name}"
                );
                for (k, v) in secret["stringData"].as_object().unwrap() {
                    env.push((k.clone(), v.as_str().unwrap().to_owned()));
                }
            }
            assert_serve_accepts(name, &strings(&container["args"]), &env, &config);
            for probe in ["livenessProbe", "readinessProbe"] {
                let exec = strings(&container[probe]["exec"]["command"]);
                if let Some((program, args)) = exec.split_first() {
                    assert_eq!(program, "/usr/bin/datanexus", "{name} {probe}");
                    let mut args = args.to_vec();
                    // A port nobody listens on: the probe fails, but parses.
                    args.extend(["--timeout".into(), "1s".into()]);
                    assert_command_parses(&format!("{name} {probe}"), &args, &env);
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "gateway, processor and store workloads");
}

#[test]
fn the_dockerfile_and_the_systemd_unit_run_the_binary_with_arguments_it_accepts() {
    let config = repo().join(INSTALLED_CONFIG);
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let json_line = |prefix: &str| -> Vec<String> {
        let joined = dockerfile.replace("\\\n", " ");
        let line = joined
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {prefix} line in the Dockerfile"));
        let start = line.find('[').unwrap();
        serde_json::from_str(&line[start..]).unwrap()
    };
    let entrypoint = json_line("ENTRYPOINT ");
    assert_eq!(entrypoint, ["/usr/bin/datanexus"]);
    // The image listens on 0.0.0.0: it runs once given tokens (as the README says),
    // and refuses, saying why, without.
    let mut env = dockerfile_env();
    let cmd = json_line("CMD ");
    let mut check = cmd.clone();
    check.push("--check-config".into());
    let refused = run(&check, &env, &config);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("without auth tokens"));
    env.push(("DATANEXUS_AUTH_TOKENS".into(), "a-token".into()));
    assert_serve_accepts("Dockerfile CMD", &cmd, &env, &config);
    // The HEALTHCHECK line: `CMD ["/usr/bin/datanexus", "healthcheck", …]`.
    let probe: Vec<String> = {
        let joined = dockerfile.replace("\\\n", " ");
        let line = joined
            .lines()
            .find(|l| l.starts_with("HEALTHCHECK"))
            .unwrap();
        let start = line.find('[').unwrap();
        serde_json::from_str(&line[start..]).unwrap()
    };
    let mut args = probe[1..].to_vec();
    args.extend(["--timeout".into(), "1s".into()]);
    assert_command_parses("Dockerfile HEALTHCHECK", &args, &dockerfile_env());

    let unit = std::fs::read_to_string(repo().join("deploy/systemd/datanexus.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words.remove(0), "/usr/bin/datanexus");
    assert_serve_accepts("datanexus.service ExecStart", &words, &[], &config);
}

#[test]
fn check_config_refuses_a_bad_configuration_without_starting() {
    let config = repo().join(INSTALLED_CONFIG);
    let args: Vec<String> = [
        "serve",
        "--config",
        CONFIG_PATH,
        "--role",
        "gateway",
        "--check-config",
    ]
    .map(str::to_owned)
    .to_vec();
    // A gateway needs a shared broker and the fan-out.
    let out = run(&args, &[], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs the Redis result fan-out"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad value, named in the error.
    let env = [("DATANEXUS_BROKER__PARTITIONS".to_owned(), "0".to_owned())];
    let mut with_check = args[..3].to_vec();
    with_check.push("--check-config".into());
    let out = run(&with_check, &env, &config);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broker.partitions"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Layering: defaults < TOML file < `DATANEXUS_*` environment < CLI flags,
//! and the errors each layer reports.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use datanexus_config::{BrokerConfig, Config, ConfigOverrides, Error, FsyncPolicy, LogFormat};

/// An environment made of `pairs` only; tests never touch the process env.
fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn toml_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn load_env(pairs: &[(&str, &str)]) -> Result<Config, Error> {
    Config::load(None, env(pairs))
}

#[test]
fn the_defaults_are_valid() {
    Config::default().validate().unwrap();
    assert_eq!(Config::load(None, env(&[])).unwrap(), Config::default());
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
}

#[test]
fn each_layer_overrides_the_one_below_it() {
    let file = toml_file(
        r#"
        grpc_addr = "127.0.0.1:1001"
        http_addr = "127.0.0.1:1002"
        data_dir = "/from/file"
        "#,
    );
    let vars = env(&[
        ("DATANEXUS_HTTP_ADDR", "127.0.0.1:2002"),
        ("DATANEXUS_DATA_DIR", "/from/env"),
        ("UNRELATED", "ignored"),
    ]);
    let mut config = Config::load(Some(file.path()), vars).unwrap();
    config
        .apply(ConfigOverrides {
            data_dir: Some(PathBuf::from("/from/cli")),
            ..ConfigOverrides::default()
        })
        .unwrap();

    assert_eq!(
        config.grpc_addr,
        addr("127.0.0.1:1001"),
        "file beats default"
    );
    assert_eq!(config.http_addr, addr("127.0.0.1:2002"), "env beats file");
    assert_eq!(config.data_dir, PathBuf::from("/from/cli"), "cli beats env");
    assert_eq!(config.shutdown_timeout, Config::default().shutdown_timeout);
}

#[test]
fn nested_env_variables_use_a_double_underscore() {
    let file = toml_file("[workers]\nbatch_size = 10\nlease_timeout = \"40s\"\n");
    let config = Config::load(
        Some(file.path()),
        env(&[
            ("DATANEXUS_WORKERS__BATCH_SIZE", "500"),
            ("DATANEXUS_LIMITS__MAX_HTTP_BODY_BYTES", "1_048_576"),
            ("DATANEXUS_BROKER__FSYNC", "never"),
            ("DATANEXUS_BROKER__RETENTION_MAX_AGE", "7days"),
            ("DATANEXUS_METRICS__HISTOGRAM_BUCKETS", "0.5, 1, 10"),
            ("DATANEXUS_REDIS__URL", "redis://cache:6379/1"),
            ("DATANEXUS_STREAMS__SLOW_CLIENT_TIMEOUT", "250ms"),
        ]),
    )
    .unwrap();
    assert_eq!(config.workers.batch_size, 500);
    assert_eq!(config.workers.lease_timeout, Duration::from_secs(40));
    assert_eq!(config.limits.max_http_body_bytes, 1 << 20);
    assert_eq!(
        config.streams.slow_client_timeout,
        Duration::from_millis(250)
    );
    let BrokerConfig::Embedded(broker) = &config.broker else {
        panic!("expected the embedded broker");
    };
    assert_eq!(broker.fsync, FsyncPolicy::Never);
    assert_eq!(
        broker.retention_max_age,
        Some(Duration::from_secs(7 * 86_400))
    );
    assert_eq!(config.metrics.histogram_buckets, [0.5, 1.0, 10.0]);
    let redis = config.redis.unwrap();
    assert_eq!(redis.url, "redis://cache:6379/1");
    assert_eq!(redis.pool_size, 8);
}

#[test]
fn env_shorthands_set_logging_auth_and_insecure() {
    let config = load_env(&[
        ("DATANEXUS_LOG_LEVEL", "debug,hyper=warn"),
        ("DATANEXUS_LOG_FORMAT", "json"),
        ("DATANEXUS_AUTH_TOKENS", "alpha, 12345"),
        ("DATANEXUS_INSECURE", "1"),
        (
            "DATANEXUS_CONFIG",
            "/ignored/because/it/names/the/file.toml",
        ),
    ])
    .unwrap();
    assert_eq!(config.logging.level, "debug,hyper=warn");
    assert_eq!(config.logging.format, LogFormat::Json);
    assert_eq!(config.auth.tokens, ["alpha", "12345"]);
    assert!(config.insecure);
    assert!(
        !load_env(&[("DATANEXUS_INSECURE", "false")])
            .unwrap()
            .insecure
    );
}

#[test]
fn env_can_switch_the_broker_kind() {
    let config = load_env(&[
        ("DATANEXUS_BROKER__KIND", "kafka"),
        ("DATANEXUS_BROKER__BOOTSTRAP_SERVERS", "k1:9092,k2:9092"),
        ("DATANEXUS_BROKER__REPLICATION_FACTOR", "3"),
        ("DATANEXUS_BROKER__PROPERTIES__ACKS", "1"),
    ])
    .unwrap();
    let BrokerConfig::Kafka(kafka) = config.broker else {
        panic!("expected kafka");
    };
    assert_eq!(kafka.bootstrap_servers, "k1:9092,k2:9092");
    assert_eq!(kafka.replication_factor, 3);
    assert_eq!(kafka.properties["acks"], "1");
}

#[test]
fn an_unknown_toml_key_is_named_in_the_error() {
    let err = Config::from_toml_str("[workers]\nbatch_size = 5\nbatch_sise = 5\n").unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Parse { line: Some(3), .. }), "{err:?}");
    assert!(message.contains("unknown field `batch_sise`"), "{message}");
    assert!(message.contains("workers"), "{message}");

    let err = Config::from_toml_str("grpc_adr = \"127.0.0.1:1\"").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `grpc_adr`"),
        "{err}"
    );

    let err =
        Config::from_toml_str("[broker]\nfsync = \"never\"\nsegment_bytes = 1\n").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `segment_bytes`"),
        "{err}"
    );
}

#[test]
fn a_file_error_names_the_file_and_line() {
    let file = toml_file("http_addr = \"127.0.0.1:1\"\n\n[logging]\nformat = \"xml\"\n");
    let err = Config::load(Some(file.path()), env(&[])).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&file.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("line 4"), "{message}");
    assert!(message.contains("format = \"xml\""), "{message}");
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = Config::load(Some(&path), env(&[])).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn an_unknown_env_variable_is_named_in_the_error() {
    for var in [
        "DATANEXUS_GRPC_ADR",
        "DATANEXUS_WORKERS__BATCH_SISE",
        "DATANEXUS_NOPE__DEEP__KEY",
        "DATANEXUS_GRPC_ADDR__PORT",
        "DATANEXUS_WORKERS",
        "DATANEXUS_BROKER__URL",
        "DATANEXUS_",
        "DATANEXUS_WORKERS____X",
    ] {
        let err = load_env(&[(var, "1")]).unwrap_err();
        assert!(matches!(err, Error::UnknownEnv { .. }), "{var}: {err:?}");
        assert!(err.to_string().contains(var), "{var}: {err}");
    }
}

#[test]
fn two_env_variables_for_one_key_conflict() {
    let err = load_env(&[
        ("DATANEXUS_LOG_LEVEL", "info"),
        ("DATANEXUS_LOGGING__LEVEL", "debug"),
    ])
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("DATANEXUS_LOG_LEVEL"), "{message}");
    assert!(message.contains("DATANEXUS_LOGGING__LEVEL"), "{message}");
    assert!(message.contains("logging.level"), "{message}");
}

#[test]
fn a_bad_address_names_the_key_and_value() {
    let err = Config::from_toml_str("grpc_addr = \"not-an-addr\"").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("grpc_addr"), "{message}");
    assert!(message.contains("not-an-addr"), "{message}");

    let err = load_env(&[("DATANEXUS_HTTP_ADDR", "localhost")]).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::InvalidEnv { .. }), "{err:?}");
    assert!(message.contains("DATANEXUS_HTTP_ADDR"), "{message}");
    assert!(message.contains("\"localhost\""), "{message}");
}

#[test]
fn a_bad_duration_names_the_key_and_value() {
    let err = Config::from_toml_str("[workers]\nsinker_interval = \"5 parsecs\"").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("workers.sinker_interval"), "{message}");
    assert!(message.contains("5 parsecs"), "{message}");

    let err = load_env(&[("DATANEXUS_SHUTDOWN_TIMEOUT", "5 parsecs")]).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("DATANEXUS_SHUTDOWN_TIMEOUT"), "{message}");
    assert!(message.contains("5 parsecs"), "{message}");

    let err = Config::from_toml_str("[broker]\nfsync_interval = \"5 parsecs\"").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("broker.fsync_interval"), "{message}");
    assert!(message.contains("5 parsecs"), "{message}");
}

#[test]
fn a_bad_typed_env_value_names_the_variable() {
    let err = load_env(&[("DATANEXUS_WORKERS__BATCH_SIZE", "lots")]).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("DATANEXUS_WORKERS__BATCH_SIZE"),
        "{message}"
    );
    assert!(message.contains("\"lots\""), "{message}");

    let err = load_env(&[("DATANEXUS_INSECURE", "maybe")]).unwrap_err();
    assert!(err.to_string().contains("DATANEXUS_INSECURE"), "{err}");
}

#[test]
fn zero_partitions_names_the_key_and_value() {
    let err = Config::from_toml_str("[broker]\npartitions = 0").unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("broker.partitions"), "{message}");
    assert!(message.contains("got 0"), "{message}");

    let err = load_env(&[("DATANEXUS_BROKER__PARTITIONS", "0")]).unwrap_err();
    assert!(err.to_string().contains("broker.partitions"), "{err}");
}

#[test]
fn an_unknown_broker_kind_is_named() {
    let err = Config::from_toml_str("[broker]\nkind = \"zookeeper\"").unwrap_err();
    assert!(
        err.to_string().contains("unknown broker kind `zookeeper`"),
        "{err}"
    );
}

#[test]
fn the_config_round_trips_through_toml() {
    let config = Config {
        redis: Some(Default::default()),
        ..Config::default()
    };
    let text = toml::to_string(&config).unwrap();
    assert_eq!(Config::from_toml_str(&text).unwrap(), config);
}

#[test]
fn an_env_broker_kind_that_conflicts_with_file_keys_is_named() {
    let file = toml_file("[broker]\nfsync = \"never\"\n");
    let err = Config::load(
        Some(file.path()),
        env(&[("DATANEXUS_BROKER__KIND", "redis")]),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidEnv { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("DATANEXUS_BROKER__KIND"), "{message}");
    assert!(message.contains("unknown field `fsync`"), "{message}");
}

#[test]
fn the_role_and_the_fanout_redis_come_from_file_env_or_flags() {
    use datanexus_config::Role;
    let file = toml_file("role = \"processor\"\n");
    let config = Config::load(Some(file.path()), env(&[])).unwrap();
    assert_eq!(config.role, Role::Processor);
    let config = load_env(&[("DATANEXUS_ROLE", "gateway")]).unwrap();
    assert_eq!(config.role, Role::Gateway);
    assert!(load_env(&[("DATANEXUS_ROLE", "janitor")]).is_err());
    let mut config = Config::default();
    config
        .apply(ConfigOverrides {
            role: Some(Role::Store),
            redis_url: Some("redis://127.0.0.1:7000/1".into()),
            broker_url: Some("redis://127.0.0.1:7000/0".into()),
            ..ConfigOverrides::default()
        })
        .unwrap();
    assert_eq!(config.role, Role::Store);
    assert_eq!(config.redis.unwrap().url, "redis://127.0.0.1:7000/1");
    assert_eq!(config.broker.kind(), "redis");
}

#[test]
fn group_names_are_configurable_and_checked() {
    let config = load_env(&[("DATANEXUS_GROUPS__PROCESSORS", "nimbus-workers")]).unwrap();
    assert_eq!(config.groups.processors, "nimbus-workers");
    let err = load_env(&[("DATANEXUS_GROUPS__FORWARDER", "bad name")]).unwrap_err();
    assert!(err.to_string().contains("groups.forwarder"), "{err}");
}

#[test]
fn the_control_nodes_come_from_file_env_or_flags_and_are_checked() {
    use datanexus_config::Role;
    let file = toml_file(
        "role = \"control\"\n[control]\nnodes = [\"http://10.0.0.2:8080\", \"http://10.0.0.3:8080/\"]\ntimeout = \"3s\"\n",
    );
    let config = Config::load(Some(file.path()), env(&[])).unwrap();
    assert_eq!(config.role, Role::Control);
    assert_eq!(config.control.nodes.len(), 2);
    assert_eq!(config.control.timeout, std::time::Duration::from_secs(3));
    let config = load_env(&[
        ("DATANEXUS_ROLE", "control"),
        ("DATANEXUS_CONTROL__NODES", "http://a:1,http://b:2"),
        ("DATANEXUS_CONTROL__TOKEN", "secret"),
    ])
    .unwrap();
    assert_eq!(config.control.nodes, ["http://a:1", "http://b:2"]);
    assert!(!format!("{:?}", config.control).contains("secret"));
    // Role control needs nodes; nodes must be base URLs, each once.
    let err = load_env(&[("DATANEXUS_ROLE", "control")]).unwrap_err();
    assert!(err.to_string().contains("control.nodes"), "{err}");
    for bad in ["10.0.0.2:8080", "http://a:1/path", "http://a:1,http://a:1"] {
        let err = load_env(&[
            ("DATANEXUS_ROLE", "control"),
            ("DATANEXUS_CONTROL__NODES", bad),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("control.nodes"), "{bad}: {err}");
    }
    let mut config = Config::default();
    config
        .apply(ConfigOverrides {
            role: Some(Role::Control),
            control_nodes: vec!["http://127.0.0.1:8081".into()],
            ..ConfigOverrides::default()
        })
        .unwrap();
    assert_eq!(config.control.nodes, ["http://127.0.0.1:8081"]);
}

//! `validate()`, the builder and the CLI overrides.

use std::net::SocketAddr;
use std::time::Duration;

use datanexus_config::{
    BrokerConfig, Config, ConfigOverrides, EmbeddedBrokerConfig, Error, KafkaBrokerConfig,
    LimitsConfig, LogFormat, LoggingConfig, MetricsConfig, RedisConfig, TopicsConfig, WorkerConfig,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Asserts `config` is invalid with an error naming `key`, returns the message.
fn invalid(config: &Config, key: &str) -> String {
    let err = config.validate().unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { key: k, .. } if k == key),
        "expected `{key}`, got {err:?}"
    );
    err.to_string()
}

#[test]
fn the_builder_mirrors_the_functional_options() {
    let config = Config::builder()
        .grpc_addr(addr("127.0.0.1:6000"))
        .http_addr(addr("127.0.0.1:6001"))
        .redis(RedisConfig {
            url: "redis://cache:6379/2".to_owned(),
            pool_size: 4,
            prefix: "dn".to_owned(),
            ..RedisConfig::default()
        })
        .logging(LoggingConfig {
            level: "debug".to_owned(),
            format: LogFormat::Json,
        })
        .workers(WorkerConfig {
            batch_size: 10,
            ..WorkerConfig::default()
        })
        .metrics(MetricsConfig {
            histogram_buckets: vec![1.0, 2.0],
            ..MetricsConfig::default()
        })
        .data_dir("/var/lib/datanexus")
        .auth_tokens(["t0k3n"])
        .build()
        .unwrap();
    assert_eq!(config.grpc_addr, addr("127.0.0.1:6000"));
    assert_eq!(config.redis.as_ref().unwrap().pool_size, 4);
    assert_eq!(config.logging.format, LogFormat::Json);
    assert_eq!(config.workers.batch_size, 10);
    assert_eq!(config.metrics.histogram_buckets, [1.0, 2.0]);
    assert_eq!(config.data_dir.to_str(), Some("/var/lib/datanexus"));
    assert_eq!(config.auth.tokens, ["t0k3n"]);
}

#[test]
fn the_builder_validates() {
    let err = Config::builder()
        .workers(WorkerConfig {
            batch_size: 0,
            ..WorkerConfig::default()
        })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("workers.batch_size"), "{err}");
}

#[test]
fn a_non_loopback_address_without_tokens_requires_insecure() {
    let open = Config::builder().http_addr(addr("0.0.0.0:8080"));
    let err = open.clone().build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config: `http_addr` binding non-loopback address 0.0.0.0:8080 \
         without auth tokens requires --insecure"
    );
    open.clone().insecure(true).build().unwrap();
    open.auth_tokens(["secret"]).build().unwrap();

    let err = Config::builder()
        .grpc_addr(addr("[::]:50051"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("[::]:50051"), "{err}");
    Config::builder()
        .grpc_addr(addr("[::1]:50051"))
        .build()
        .unwrap();
}

#[test]
fn insecure_from_the_command_line_allows_a_public_address() {
    let mut config = Config::default();
    let public = ConfigOverrides {
        grpc_addr: Some(addr("10.0.0.1:50051")),
        ..ConfigOverrides::default()
    };
    assert!(config.apply(public.clone()).is_err());
    config
        .apply(ConfigOverrides {
            insecure: true,
            ..public
        })
        .unwrap();
    assert!(config.insecure);
}

#[test]
fn tokens_must_be_non_empty_without_whitespace_and_are_never_echoed() {
    for token in ["", "has space", "tab\there"] {
        let config = Config {
            auth: datanexus_config::AuthConfig {
                tokens: vec!["good".into(), token.into()],
            },
            ..Config::default()
        };
        let message = invalid(&config, "auth.tokens[1]");
        assert!(token.is_empty() || !message.contains(token), "{message}");
        assert!(
            !format!("{config:?}").contains("good"),
            "debug leaks tokens"
        );
    }
}

#[test]
fn partitions_must_be_between_1_and_1024() {
    for (partitions, ok) in [(0, false), (1, true), (1024, true), (1025, false)] {
        let config = Config {
            broker: BrokerConfig::Embedded(EmbeddedBrokerConfig {
                partitions,
                ..EmbeddedBrokerConfig::default()
            }),
            ..Config::default()
        };
        if ok {
            config.validate().unwrap();
        } else {
            let message = invalid(&config, "broker.partitions");
            assert!(message.contains(&format!("got {partitions}")), "{message}");
        }
    }
}

#[test]
fn histogram_buckets_must_be_finite_and_ascending() {
    for buckets in [
        vec![],
        vec![1.0, 1.0],
        vec![2.0, 1.0],
        vec![1.0, f64::INFINITY],
    ] {
        let config = Config {
            metrics: MetricsConfig {
                histogram_buckets: buckets,
                ..MetricsConfig::default()
            },
            ..Config::default()
        };
        invalid(&config, "metrics.histogram_buckets");
    }
}

#[test]
fn zero_durations_and_limits_are_rejected() {
    let mut config = Config::default();
    config.workers.acker_interval = Duration::ZERO;
    invalid(&config, "workers.acker_interval");

    let config = Config {
        shutdown_timeout: Duration::ZERO,
        ..Config::default()
    };
    invalid(&config, "shutdown_timeout");

    let config = Config {
        limits: LimitsConfig {
            max_http_body_bytes: 0,
            ..LimitsConfig::default()
        },
        ..Config::default()
    };
    invalid(&config, "limits.max_http_body_bytes");

    let mut config = Config::default();
    config.limits.max_inflight_records = config.limits.max_batch_metrics - 1;
    invalid(&config, "limits.max_inflight_records");

    let mut config = Config::default();
    config.workers.lease_timeout = config.workers.heartbeat_interval;
    invalid(&config, "workers.lease_timeout");
}

#[test]
fn streams_need_a_buffer_and_a_slow_client_timeout() {
    let mut config = Config::default();
    config.streams.channel_capacity = 0;
    invalid(&config, "streams.channel_capacity");

    let mut config = Config::default();
    config.streams.slow_client_timeout = Duration::ZERO;
    invalid(&config, "streams.slow_client_timeout");

    let mut config = Config::default();
    config.streams.max_replay_results = 0;
    config.validate().expect("0 disables replay");
}

#[test]
fn topics_must_be_valid_and_distinct() {
    let mut config = Config {
        topics: TopicsConfig {
            dlq: "metrics".to_owned(),
            ..TopicsConfig::default()
        },
        ..Config::default()
    };
    let message = invalid(&config, "topics.dlq");
    assert!(message.contains("topics.metrics"), "{message}");

    config.topics = TopicsConfig {
        events: "bad name".to_owned(),
        ..TopicsConfig::default()
    };
    invalid(&config, "topics.events");
}

#[test]
fn the_listeners_must_not_share_an_address() {
    let config = Config {
        http_addr: Config::default().grpc_addr,
        ..Config::default()
    };
    invalid(&config, "http_addr");
}

#[test]
fn overrides_replace_only_what_they_set() {
    let mut config = Config::builder()
        .auth_tokens(["from-file"])
        .build()
        .unwrap();
    config.apply(ConfigOverrides::default()).unwrap();
    assert_eq!(config.auth.tokens, ["from-file"]);

    config
        .apply(ConfigOverrides {
            auth_tokens: vec!["from-cli".to_owned()],
            log_level: Some("trace".to_owned()),
            log_format: Some(LogFormat::Json),
            ..ConfigOverrides::default()
        })
        .unwrap();
    assert_eq!(config.auth.tokens, ["from-cli"]);
    assert_eq!(config.logging.level, "trace");
    assert_eq!(config.logging.format, LogFormat::Json);
    assert!(
        !format!(
            "{:?}",
            ConfigOverrides {
                auth_tokens: vec!["s3cret".to_owned()],
                ..ConfigOverrides::default()
            }
        )
        .contains("s3cret")
    );
}

#[test]
fn a_broker_url_override_targets_or_selects_the_backend() {
    let mut config = Config::default();
    let url = |u: &str| ConfigOverrides {
        broker_url: Some(u.to_owned()),
        ..ConfigOverrides::default()
    };
    let err = config.apply(url("http://nope")).unwrap_err();
    assert!(err.to_string().contains("broker_url"), "{err}");

    config.apply(url("redis://r:6379/0")).unwrap();
    assert!(matches!(&config.broker, BrokerConfig::Redis(r) if r.url == "redis://r:6379/0"));
    config.apply(url("rediss://r2:6380/0")).unwrap();
    assert!(matches!(&config.broker, BrokerConfig::Redis(r) if r.url == "rediss://r2:6380/0"));

    let mut config = Config::default();
    config.apply(url("kafka://k1:9092,k2:9092")).unwrap();
    assert_eq!(
        config.broker,
        BrokerConfig::Kafka(KafkaBrokerConfig {
            bootstrap_servers: "k1:9092,k2:9092".to_owned(),
            ..KafkaBrokerConfig::default()
        })
    );
}

#[test]
fn tokens_are_plain_strings_with_every_scope_or_scoped() {
    use datanexus_config::{Scope, TokenConfig};
    let config = Config::from_toml_str(
        r#"
        [[auth.tokens]]
        token = "ingest-only"
        scopes = ["ingest"]

        [[auth.tokens]]
        token = "reader"
        scopes = ["query", "admin"]
        "#,
    )
    .unwrap();
    let scopes: Vec<(&str, &[Scope])> = config
        .auth
        .tokens
        .iter()
        .map(|t| (t.token(), t.scopes()))
        .collect();
    assert_eq!(
        scopes,
        [
            ("ingest-only", &[Scope::Ingest][..]),
            ("reader", &[Scope::Query, Scope::Admin][..])
        ]
    );
    let plain = Config::from_toml_str("[auth]\ntokens = [\"all\"]").unwrap();
    assert_eq!(plain.auth.tokens[0].scopes(), Scope::ALL);
    // Never printed.
    let debug = format!("{:?}", TokenConfig::from("s3cret"));
    assert!(!debug.contains("s3cret"), "{debug}");
    let none = Config::from_toml_str("[[auth.tokens]]\ntoken = \"x\"\nscopes = []").unwrap_err();
    assert!(none.to_string().contains("auth.tokens[0].scopes"), "{none}");
    let unknown =
        Config::from_toml_str("[[auth.tokens]]\ntoken = \"x\"\nscopes = [\"root\"]").unwrap_err();
    assert!(unknown.to_string().contains("auth"), "{unknown}");
}

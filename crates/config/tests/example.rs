//! `config/example.toml` must parse, validate, state the defaults and
//! document every key.

use datanexus_config::{
    BrokerConfig, Config, EmbeddedBrokerConfig, KafkaBrokerConfig, RedisBrokerConfig, RedisConfig,
};
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../../config/example.toml");

/// The commented-out blocks of the example that start with a `# [section]`
/// line, uncommented.
fn commented_blocks() -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in EXAMPLE.lines() {
        let uncommented = line.strip_prefix("# ").or_else(|| line.strip_prefix('#'));
        match (&mut current, uncommented) {
            (None, Some(rest)) if rest.starts_with('[') => current = Some(format!("{rest}\n")),
            (Some(block), Some(rest)) => {
                block.push_str(rest);
                block.push('\n');
            }
            (Some(_), None) => blocks.extend(current.take()),
            _ => {}
        }
    }
    blocks.extend(current);
    blocks
}

/// Dotted paths of every leaf key in `table`.
fn leaf_paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => leaf_paths(inner, &format!("{path}."), out),
            _ => out.push(path),
        }
    }
}

/// Whether the dotted `path` exists in `table`.
fn has_path(table: &toml::Table, path: &str) -> bool {
    let mut current = Some(table);
    let mut value = None;
    for segment in path.split('.') {
        value = current.and_then(|t| t.get(segment));
        current = value.and_then(toml::Value::as_table);
    }
    value.is_some()
}

#[test]
fn the_example_parses_validates_and_states_the_defaults() {
    let config = Config::from_toml_str(EXAMPLE).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn the_example_sets_every_key_of_the_default_config() {
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
    let mut paths = Vec::new();
    leaf_paths(&defaults, "", &mut paths);
    let missing: Vec<_> = paths.iter().filter(|p| !has_path(&example, p)).collect();
    assert!(missing.is_empty(), "example.toml lacks {missing:?}");
}

#[test]
fn the_example_documents_the_optional_keys_in_comments() {
    for key in [
        "# retention_max_age = ",
        "# retention_max_bytes = ",
        "# [redis]",
    ] {
        assert!(EXAMPLE.contains(key), "example.toml lacks `{key}`");
    }
}

#[test]
fn the_commented_out_alternatives_parse_to_their_defaults() {
    let blocks = commented_blocks();
    assert_eq!(blocks.len(), 3, "{blocks:#?}");
    let parsed: Vec<Config> = blocks
        .iter()
        .map(|block| Config::from_toml_str(block).unwrap_or_else(|e| panic!("{e}\n{block}")))
        .collect();

    assert_eq!(
        parsed[0].broker,
        BrokerConfig::Redis(RedisBrokerConfig::default())
    );
    let BrokerConfig::Kafka(kafka) = &parsed[1].broker else {
        panic!("expected kafka, got {:?}", parsed[1].broker);
    };
    assert_eq!(
        KafkaBrokerConfig {
            properties: Default::default(),
            ..kafka.clone()
        },
        KafkaBrokerConfig::default()
    );
    assert_eq!(kafka.properties["compression.type"], "lz4");
    assert_eq!(parsed[2].redis, Some(RedisConfig::default()));
}

#[test]
fn the_commented_out_retention_settings_parse() {
    let section: String = EXAMPLE
        .lines()
        .filter_map(|l| l.strip_prefix("# retention_"))
        .map(|l| format!("retention_{l}\n"))
        .collect();
    let config = Config::from_toml_str(&format!("[broker]\n{section}")).unwrap();
    let BrokerConfig::Embedded(EmbeddedBrokerConfig {
        retention_max_age,
        retention_max_bytes,
        ..
    }) = config.broker
    else {
        panic!("expected the embedded broker");
    };
    assert_eq!(retention_max_age, Some(Duration::from_secs(7 * 24 * 3600)));
    assert_eq!(retention_max_bytes, Some(10 * 1024 * 1024 * 1024));
}

#[test]
fn the_commented_out_store_retention_parses() {
    let line = EXAMPLE
        .lines()
        .find_map(|l| l.strip_prefix("#  retention_max_age"))
        .expect("store retention example");
    let config = Config::from_toml_str(&format!("[store]\nretention_max_age{line}\n")).unwrap();
    assert_eq!(
        config.store.retention_max_age,
        Some(Duration::from_secs(30 * 24 * 3600))
    );
}

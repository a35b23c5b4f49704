//! The `[store]` section: the embedded default, PostgreSQL by URL, `--store`, and the
//! data-flow-engine seed's `POSTGRES_*` variables.

use datanexus_config::{Config, ConfigOverrides, Error, StoreConfig, StoreKind};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn invalid_key(err: Error) -> String {
    match err {
        Error::Invalid { key, .. } => key,
        other => panic!("expected an invalid key, got {other}"),
    }
}

#[test]
fn the_store_is_embedded_unless_told_otherwise() {
    let config = Config::load(None, env(&[("POSTGRES_HOST", "db")])).unwrap();
    assert_eq!(config.store.kind, StoreKind::Embedded);
    assert!(config.store.url.is_empty());
}

#[test]
fn a_postgres_store_takes_its_url_from_the_file_or_the_environment() {
    let config = Config::from_toml_str(
        r#"
        [store]
        kind = "postgres"
        url = "postgres://u:p@db:5432/metrics"
        pool_size = 4
        "#,
    )
    .unwrap();
    assert_eq!(config.store.kind, StoreKind::Postgres);
    assert_eq!(config.store.url, "postgres://u:p@db:5432/metrics");
    assert_eq!(config.store.pool_size, 4);

    let config = Config::load(
        None,
        env(&[
            ("DATANEXUS_STORE__KIND", "postgres"),
            ("DATANEXUS_STORE__URL", "postgresql://h/d"),
        ]),
    )
    .unwrap();
    assert_eq!(config.store.url, "postgresql://h/d");
}

#[test]
fn the_seeds_postgres_variables_make_the_url() {
    let config = Config::load(
        None,
        env(&[
            ("DATANEXUS_STORE__KIND", "postgres"),
            ("POSTGRES_HOST", "db.internal"),
            ("POSTGRES_PORT", "6432"),
            ("POSTGRES_USER", "flow"),
            ("POSTGRES_PASSWORD", "p@ss word"),
            ("POSTGRES_DB", "dataflow"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.store.url,
        "postgres://flow:p%40ss%20word@db.internal:6432/dataflow"
    );
    // Defaults as libpq's: port 5432, user postgres, database = user.
    assert_eq!(
        StoreConfig::url_from_seed_vars([("POSTGRES_HOST", "h")]).as_deref(),
        Some("postgres://postgres@h:5432/postgres")
    );
    assert_eq!(
        StoreConfig::url_from_seed_vars([("POSTGRES_USER", "x")]),
        None
    );
    // An explicit URL wins over the variables.
    let config = Config::load(
        None,
        env(&[
            ("DATANEXUS_STORE__KIND", "postgres"),
            ("DATANEXUS_STORE__URL", "postgres://explicit/db"),
            ("POSTGRES_HOST", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(config.store.url, "postgres://explicit/db");
}

#[test]
fn store_flag_switches_backends() {
    let mut config = Config::default();
    config
        .apply(ConfigOverrides {
            store: Some("postgres://u@h/d".into()),
            ..ConfigOverrides::default()
        })
        .unwrap();
    assert_eq!(config.store.kind, StoreKind::Postgres);
    assert_eq!(config.store.url, "postgres://u@h/d");
    config
        .apply(ConfigOverrides {
            store: Some("embedded".into()),
            ..ConfigOverrides::default()
        })
        .unwrap();
    assert_eq!(config.store.kind, StoreKind::Embedded);
    assert!(config.store.url.is_empty());
    let err = config
        .apply(ConfigOverrides {
            store: Some("mysql://h/d".into()),
            ..ConfigOverrides::default()
        })
        .unwrap_err();
    assert_eq!(invalid_key(err), "store");
}

#[test]
fn bad_store_settings_are_refused_naming_the_key() {
    let bad = [
        "[store]\nkind = \"postgres\"",
        "[store]\nkind = \"postgres\"\nurl = \"mysql://h/d\"",
        "[store]\nurl = \"postgres://h/d\"",
    ];
    for text in bad {
        let err = Config::from_toml_str(text).unwrap_err();
        assert_eq!(invalid_key(err), "store.url", "{text}");
    }
    let err = Config::from_toml_str("[store]\npool_size = 0").unwrap_err();
    assert_eq!(invalid_key(err), "store.pool_size");
    let err = Config::from_toml_str("[store]\nkind = \"mongo\"").unwrap_err();
    assert!(err.to_string().contains("mongo"), "{err}");
}

#[test]
fn seed_variables_with_an_ipv6_host_or_a_socket_directory_make_valid_urls() {
    assert_eq!(
        StoreConfig::url_from_seed_vars([("POSTGRES_HOST", "::1"), ("POSTGRES_DB", "d")])
            .as_deref(),
        Some("postgres://postgres@[::1]:5432/d")
    );
    assert_eq!(
        StoreConfig::url_from_seed_vars([("POSTGRES_HOST", "/var/run/postgresql")]).as_deref(),
        Some("postgres://postgres@localhost:5432/postgres?host=%2Fvar%2Frun%2Fpostgresql")
    );
}

#[test]
fn the_store_url_is_never_printed() {
    let config =
        Config::from_toml_str("[store]\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@h/d\"")
            .unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("<redacted>"), "{printed}");
}

#[test]
fn a_file_completed_by_the_store_flag_is_accepted() {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"[store]\nkind = \"postgres\"\npool_size = 3\n")
        .unwrap();
    // Alone, the file lacks the URL…
    let err = Config::load(Some(file.path()), env(&[])).unwrap_err();
    assert_eq!(invalid_key(err), "store.url");
    // …which --store gives.
    let config = Config::load_with_overrides(
        Some(file.path()),
        env(&[]),
        ConfigOverrides {
            store: Some("postgres://u@h/d".into()),
            ..ConfigOverrides::default()
        },
    )
    .unwrap();
    assert_eq!(config.store.url, "postgres://u@h/d");
    assert_eq!(config.store.pool_size, 3);
    // And a bad flag is still refused, naming the key.
    let err = Config::load_with_overrides(
        None,
        env(&[]),
        ConfigOverrides {
            store: Some("mysql://h/d".into()),
            ..ConfigOverrides::default()
        },
    )
    .unwrap_err();
    assert_eq!(invalid_key(err), "store");
}

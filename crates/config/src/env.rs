//! Mapping `DATANEXUS_*` environment variables onto the TOML value tree.
//!
//! A variable's name after the prefix is lowercased and split on `__` into a
//! key path: `DATANEXUS_WORKERS__BATCH_SIZE=500` sets `workers.batch_size`.
//! A few short aliases exist (`DATANEXUS_LOG_LEVEL` for `logging.level`,
//! `DATANEXUS_LOG_FORMAT` for `logging.format`, `DATANEXUS_AUTH_TOKENS` for
//! `auth.tokens`).
//!
//! Values are typed by the schema where it is known (a string key keeps the
//! raw string, a list key takes a comma-separated list, a boolean accepts
//! `true`/`false`/`1`/`0`); elsewhere an integer, float or boolean literal is
//! used as such and anything else as a string. The overlaid tree is then
//! deserialized like a file, so unknown keys and bad values are rejected;
//! the error names the responsible variable.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::{Table, Value};

use crate::{BrokerConfig, Config, EmbeddedBrokerConfig, Error, RedisConfig, Result};

/// Prefix of the environment variables read by [`Config::load`].
pub const ENV_PREFIX: &str = "DATANEXUS_";

/// Variable conventionally holding the config file path. [`Config::load`]
/// ignores it (the binary reads it to find the file).
pub const ENV_CONFIG_FILE: &str = "DATANEXUS_CONFIG";

/// Short variable names (after the prefix) and the key paths they set.
const ALIASES: [(&str, [&str; 2]); 3] = [
    ("LOG_LEVEL", ["logging", "level"]),
    ("LOG_FORMAT", ["logging", "format"]),
    ("AUTH_TOKENS", ["auth", "tokens"]),
];

/// One `DATANEXUS_*` variable and the key path it sets.
#[derive(Debug)]
struct EnvVar {
    name: String,
    value: String,
    path: Vec<String>,
}

/// The `DATANEXUS_*` layer, sorted by variable name.
#[derive(Debug)]
pub(crate) struct EnvOverlay {
    vars: Vec<EnvVar>,
}

impl EnvOverlay {
    /// Keeps the `DATANEXUS_*` variables of `vars` and maps them to key paths.
    pub(crate) fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut parsed = Vec::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == ENV_CONFIG_FILE {
                continue;
            }
            let path = key_path(rest).ok_or_else(|| Error::UnknownEnv {
                var: name.clone(),
                reason: "expected DATANEXUS_<KEY> or DATANEXUS_<SECTION>__<KEY>".to_owned(),
            })?;
            parsed.push(EnvVar { name, value, path });
        }
        parsed.sort_by(|a, b| a.name.cmp(&b.name));

        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for var in &parsed {
            let key = var.path.join(".");
            if let Some(first) = seen.insert(key.clone(), &var.name) {
                return Err(Error::EnvConflict {
                    key,
                    first: first.to_owned(),
                    second: var.name.clone(),
                });
            }
        }
        Ok(Self { vars: parsed })
    }

    /// Overlays the variables on `file` (the file's TOML tree) and
    /// deserializes the result. Does not validate.
    pub(crate) fn apply(&self, file: Table) -> Result<Config> {
        let hints = hint_table(&self.broker_kind(&file));
        let mut merged = file.clone();
        for var in &self.vars {
            var.merge_into(&mut merged, &hints)?;
        }
        match merged.try_into::<Config>() {
            Ok(config) => Ok(config),
            Err(err) => Err(self.blame(&file, &hints, &err)),
        }
    }

    /// The broker kind the merged tree will have, for typing hints.
    fn broker_kind(&self, file: &Table) -> String {
        let from_env = self
            .vars
            .iter()
            .find(|v| v.path == ["broker", "kind"])
            .map(|v| v.value.clone());
        let from_file = || file.get("broker")?.get("kind")?.as_str().map(str::to_owned);
        from_env
            .or_else(from_file)
            .unwrap_or_else(|| "embedded".to_owned())
    }

    /// Finds the first variable that alone makes `file` fail to deserialize
    /// and turns `err` into an error naming it.
    fn blame(&self, file: &Table, hints: &Table, err: &toml::de::Error) -> Error {
        for var in &self.vars {
            let mut single = file.clone();
            if var.merge_into(&mut single, hints).is_err() {
                continue;
            }
            if let Err(err) = single.try_into::<Config>() {
                return var.error(&err);
            }
        }
        let (message, key) = crate::load::split_toml_error(err);
        Error::Parse {
            origin: "from DATANEXUS_* environment".to_owned(),
            line: None,
            column: None,
            snippet: None,
            key,
            message,
        }
    }
}

impl EnvVar {
    /// Sets this variable's key in `root`, creating sections as needed.
    fn merge_into(&self, root: &mut Table, hints: &Table) -> Result<()> {
        let Some((leaf, sections)) = self.path.split_last() else {
            return Err(self.unknown("empty key".to_owned()));
        };
        let mut table = root;
        let mut hint = Some(hints);
        for (depth, section) in sections.iter().enumerate() {
            let not_a_section = |kind: &str| {
                self.unknown(format!(
                    "`{}` is a {kind}, not a section",
                    sections[..=depth].join(".")
                ))
            };
            let section_hint = hint.and_then(|h| h.get(section));
            if let Some(value) = section_hint.filter(|v| !v.is_table()) {
                return Err(not_a_section(value.type_str()));
            }
            hint = section_hint.and_then(Value::as_table);
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            table = match entry {
                Value::Table(inner) => inner,
                other => return Err(not_a_section(other.type_str())),
            };
        }
        let leaf_hint = hint.and_then(|h| h.get(leaf));
        if matches!(leaf_hint, Some(Value::Table(_)))
            || matches!(table.get(leaf), Some(Value::Table(_)))
        {
            return Err(self.unknown(format!(
                "`{}` is a section; set its keys with {}__<KEY>",
                self.path.join("."),
                self.name
            )));
        }
        table.insert(leaf.clone(), coerce(&self.value, leaf_hint));
        Ok(())
    }

    fn unknown(&self, reason: String) -> Error {
        Error::UnknownEnv {
            var: self.name.clone(),
            reason,
        }
    }

    /// The error for a deserialization failure caused by this variable.
    fn error(&self, err: &toml::de::Error) -> Error {
        let (message, key) = crate::load::split_toml_error(err);
        let key = key.unwrap_or_default();
        // The variable names no key if deserialization rejected one of its
        // own path segments (as opposed to, say, a file key that a new
        // `broker.kind` does not accept).
        let names_unknown_key = self.path.iter().enumerate().any(|(depth, segment)| {
            key == self.path[..depth].join(".")
                && message.contains(&format!("unknown field `{segment}`"))
        });
        if names_unknown_key {
            return self.unknown(format!(
                "no config key `{}` ({message})",
                self.path.join(".")
            ));
        }
        Error::InvalidEnv {
            var: self.name.clone(),
            value: self.value.clone(),
            message: format!("`{}`: {message}", self.path.join(".")),
        }
    }
}

/// Maps a variable name (without prefix) to a lowercase key path.
fn key_path(rest: &str) -> Option<Vec<String>> {
    if let Some((_, path)) = ALIASES.iter().find(|(alias, _)| *alias == rest) {
        return Some(path.iter().map(|s| (*s).to_owned()).collect());
    }
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    path.iter().all(|s| !s.is_empty()).then_some(path)
}

/// A serialized config with every optional part present, used to type
/// environment values. Falls back to no hints if serialization fails.
fn hint_table(broker_kind: &str) -> Table {
    let mut sample = Config {
        redis: Some(RedisConfig::default()),
        ..Config::default()
    };
    sample.broker = match BrokerConfig::default_for_kind(broker_kind).unwrap_or_default() {
        BrokerConfig::Embedded(embedded) => BrokerConfig::Embedded(EmbeddedBrokerConfig {
            retention_max_age: Some(Duration::from_secs(1)),
            retention_max_bytes: Some(1),
            ..embedded
        }),
        other => other,
    };
    Table::try_from(&sample).unwrap_or_default()
}

/// Types `raw` like `hint` when known, else guesses a TOML scalar.
fn coerce(raw: &str, hint: Option<&Value>) -> Value {
    let string = || Value::String(raw.to_owned());
    match hint {
        Some(Value::String(_)) => string(),
        Some(Value::Boolean(_)) => parse_bool(raw).map_or_else(string, Value::Boolean),
        Some(Value::Integer(_)) => parse_int(raw).map_or_else(string, Value::Integer),
        Some(Value::Float(_)) => raw.trim().parse().map_or_else(|_| string(), Value::Float),
        Some(Value::Array(items)) => {
            let element = items
                .first()
                .cloned()
                .unwrap_or(Value::String(String::new()));
            Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| coerce(item, Some(&element)))
                    .collect(),
            )
        }
        _ => guess(raw),
    }
}

/// Parses an integer or float or `true`/`false` literal, else a string.
fn guess(raw: &str) -> Value {
    let trimmed = raw.trim();
    match trimmed {
        "true" => return Value::Boolean(true),
        "false" => return Value::Boolean(false),
        _ => {}
    }
    if let Some(int) = parse_int(trimmed) {
        return Value::Integer(int);
    }
    let numeric = trimmed.chars().any(|c| c.is_ascii_digit())
        && trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || ".eE+-".contains(c));
    match trimmed.parse::<f64>() {
        Ok(float) if numeric => Value::Float(float),
        _ => Value::String(raw.to_owned()),
    }
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

fn parse_int(raw: &str) -> Option<i64> {
    raw.trim().replace('_', "").parse().ok()
}

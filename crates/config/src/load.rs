//! Parsing TOML and layering the file and the environment.

use std::path::Path;

use crate::env::EnvOverlay;
use crate::{Config, ConfigOverrides, Error, Result, StoreConfig, StoreKind};

/// Origin name used in errors for documents that did not come from a file.
const STRING_ORIGIN: &str = "<string>";

/// Longest snippet of the offending line quoted in a parse error.
const MAX_SNIPPET_CHARS: usize = 120;

impl Config {
    /// Parses a TOML document on top of the defaults, then validates it.
    ///
    /// Keys missing from the document keep their defaults; unknown keys are
    /// rejected with their name, line and column.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config = parse_document(text, STRING_ORIGIN)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the configuration: defaults, then `file` (if any), then the
    /// `DATANEXUS_*` variables among `env`, then validates the result.
    ///
    /// Pass `std::env::vars()` as `env` in production. Variables without the
    /// [`ENV_PREFIX`](crate::ENV_PREFIX) are ignored, as is
    /// [`ENV_CONFIG_FILE`](crate::ENV_CONFIG_FILE). Any other variable must
    /// map to a key, or loading fails naming it:
    ///
    /// - `DATANEXUS_<KEY>` sets a top-level key (`DATANEXUS_HTTP_ADDR`);
    /// - `DATANEXUS_<SECTION>__<KEY>` sets a key in a section
    ///   (`DATANEXUS_WORKERS__BATCH_SIZE`, `DATANEXUS_BROKER__FSYNC`);
    /// - `DATANEXUS_LOG_LEVEL`, `DATANEXUS_LOG_FORMAT` and
    ///   `DATANEXUS_AUTH_TOKENS` are shorthands for `logging.level`,
    ///   `logging.format` and `auth.tokens`.
    ///
    /// Values are typed by the schema: lists are comma-separated, booleans
    /// accept `true`/`false`/`1`/`0`, durations are humantime strings.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let config = Self::load_unvalidated(file, env)?;
        config.validate()?;
        Ok(config)
    }

    /// [`Config::load`], then the command-line `overrides` on top, then validation of
    /// the result: what `serve` runs with. Unlike `load` followed by
    /// [`Config::apply`], a file or environment that is only complete with the flags
    /// (e.g. `store.kind = "postgres"` with the URL in `--store`) is accepted.
    ///
    /// # Errors
    /// As [`Config::load`] and [`Config::apply`].
    pub fn load_with_overrides(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: ConfigOverrides,
    ) -> Result<Self> {
        let mut config = Self::load_unvalidated(file, env)?;
        config.apply_unvalidated(overrides)?;
        config.validate()?;
        Ok(config)
    }

    fn load_unvalidated(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let overlay = EnvOverlay::from_vars(env.iter().cloned())?;
        let table = match file {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        let mut config = overlay.apply(table)?;
        config.fill_store_url_from_seed_vars(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Ok(config)
    }
}

/// Reads `path` and returns its TOML tree after checking that it
/// deserializes into a [`Config`], so that schema errors carry locations.
fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let origin = path.display().to_string();
    parse_document(&text, &origin)?;
    toml::from_str(&text).map_err(|err| parse_error(&err, &text, &origin))
}

/// Deserializes a whole document into a [`Config`] without validating it.
fn parse_document(text: &str, origin: &str) -> Result<Config> {
    toml::from_str(text).map_err(|err| parse_error(&err, text, origin))
}

/// Converts a toml error into [`Error::Parse`], with location and snippet.
fn parse_error(err: &toml::de::Error, text: &str, origin: &str) -> Error {
    let (message, key) = split_toml_error(err);
    let (line, column, snippet) = match err.span() {
        Some(span) => {
            let offset = refine_offset(text, span.start, &message);
            let (line, column) = line_column(text, offset);
            let snippet = text
                .lines()
                .nth(line - 1)
                .map(|l| l.trim().chars().take(MAX_SNIPPET_CHARS).collect::<String>())
                .filter(|l| !l.is_empty());
            (
                u32::try_from(line).ok(),
                u32::try_from(column).ok(),
                snippet,
            )
        }
        None => (None, None, None),
    };
    Error::Parse {
        origin: origin.to_owned(),
        line,
        column,
        snippet,
        key,
        message,
    }
}

/// Splits a toml error into its one-line message and the dotted key it
/// occurred in (toml only exposes the latter through `Display`).
pub(crate) fn split_toml_error(err: &toml::de::Error) -> (String, Option<String>) {
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let mut bare = err.clone();
    bare.set_input(None);
    let key = bare
        .to_string()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`').map(str::to_owned));
    (message, key)
}

/// Errors raised inside sections with a hand-written `Deserialize` (the
/// broker) point at the section header; move such an offset to the line of
/// the key the message names, if it can be found in that section.
fn refine_offset(text: &str, offset: usize, message: &str) -> usize {
    let Some(line_start) = text
        .get(..offset)
        .map(|t| t.rfind('\n').map_or(0, |i| i + 1))
    else {
        return offset;
    };
    let rest = &text[line_start..];
    if !rest.trim_start().starts_with('[') {
        return offset;
    }
    let named = |marker: &str| {
        let after = &message[message.find(marker)? + marker.len()..];
        let name = &after[..after.find('`')?];
        Some(name.rsplit('.').next().unwrap_or(name).to_owned())
    };
    let Some(leaf) = named("unknown field `").or_else(|| named("(key `")) else {
        return offset;
    };
    let mut line_offset = line_start;
    for (i, line) in rest.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && trimmed.starts_with('[') {
            break;
        }
        let key_then_eq = trimmed
            .strip_prefix(leaf.as_str())
            .is_some_and(|after| after.trim_start().starts_with('='));
        if i > 0 && key_then_eq {
            return line_offset + (line.len() - trimmed.len());
        }
        line_offset += line.len();
    }
    offset
}

/// 1-based line and column (in chars) of byte offset `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl Config {
    /// With `store.kind = "postgres"` and no `store.url`, takes the URL made from the
    /// seed's `POSTGRES_*` variables (see [`StoreConfig::url_from_seed_vars`]).
    fn fill_store_url_from_seed_vars<'a>(
        &mut self,
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        if self.store.kind == StoreKind::Postgres
            && self.store.url.is_empty()
            && let Some(url) = StoreConfig::url_from_seed_vars(vars)
        {
            self.store.url = url;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("a = 1\nbb = 2", 0), (1, 1));
        assert_eq!(line_column("a = 1\nbb = 2", 7), (2, 2));
        assert_eq!(line_column("é = 1", 3), (1, 3));
    }

    #[test]
    fn errors_inside_the_broker_section_point_at_the_offending_line() {
        let text = "[broker]\npartitions = 2\n  fsync_interval = \"5 parsecs\"\n[workers]\n";
        let err = toml::from_str::<Config>(text).unwrap_err();
        let Error::Parse { line, column, .. } = parse_error(&err, text, "t") else {
            panic!("expected a parse error");
        };
        assert_eq!((line, column), (Some(3), Some(3)));
    }

    #[test]
    fn split_toml_error_recovers_the_key_path() {
        let err = toml::from_str::<Config>("[workers]\nbatch_size = \"x\"\n").unwrap_err();
        let (message, key) = split_toml_error(&err);
        assert!(message.contains("invalid type"), "{message}");
        assert_eq!(key.as_deref(), Some("workers.batch_size"));
    }
}

//! The crate's error type.
//!
//! Every message is lowercase and names the offending key, environment
//! variable or value so that an operator can fix the configuration without
//! reading the source.

use std::path::PathBuf;

/// Shorthand for results whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading or validating a [`Config`](crate::Config).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read.
    #[error("failed to read config file {}: {source}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// The TOML document is malformed or does not match the schema
    /// (unknown key, wrong type, unparsable address or duration...).
    #[error("invalid config {origin}{}{}: {message}", location(*.line, *.column, .snippet.as_deref()), key_suffix(.key.as_deref()))]
    Parse {
        /// Where the document came from: a file path or `<string>`.
        origin: String,
        /// 1-based line of the offending value, when known.
        line: Option<u32>,
        /// 1-based column of the offending value, when known.
        column: Option<u32>,
        /// The offending line of the document, trimmed, when known.
        snippet: Option<String>,
        /// Dotted path of the key being deserialized, when known.
        key: Option<String>,
        /// What went wrong, e.g. "unknown field `foo`, expected ...".
        message: String,
    },

    /// A `DATANEXUS_*` environment variable does not map to any config key.
    #[error("unknown environment variable {var}: {reason}")]
    UnknownEnv {
        /// The variable's name.
        var: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A `DATANEXUS_*` environment variable maps to a key but its value is invalid.
    #[error("invalid value {value:?} in environment variable {var}: {message}")]
    InvalidEnv {
        /// The variable's name.
        var: String,
        /// The raw value of the variable.
        value: String,
        /// What went wrong.
        message: String,
    },

    /// Two environment variables set the same config key.
    #[error("environment variables {first} and {second} both set `{key}`")]
    EnvConflict {
        /// The dotted config key.
        key: String,
        /// The first variable (in name order).
        first: String,
        /// The second variable (in name order).
        second: String,
    },

    /// The configuration parsed but violates a constraint.
    #[error("invalid config: `{key}` {message}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `broker.partitions`.
        key: String,
        /// What is wrong with it, including the offending value.
        message: String,
    },
}

impl Error {
    /// Builds an [`Error::Invalid`] for `key`.
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

fn location(line: Option<u32>, column: Option<u32>, snippet: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!(" at line {line}"));
        if let Some(column) = column {
            out.push_str(&format!(", column {column}"));
        }
    }
    if let Some(snippet) = snippet {
        out.push_str(&format!(" (`{snippet}`)"));
    }
    out
}

fn key_suffix(key: Option<&str>) -> String {
    key.map(|key| format!(" in `{key}`")).unwrap_or_default()
}

//! Database connections registered at run time (`POST /db-connections/register`), kept
//! in a file of the data directory so that they survive a restart (the seed kept them
//! in memory only).
//!
//! The file (`<data_dir>/connections.json`) holds secrets: it is created with mode 0600,
//! written to a temporary file that is fsynced and renamed over it, and the directory
//! is fsynced, so it is always either the old or the new registry.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::io_error;
use crate::{Error, Result};

/// Longest connection id.
const MAX_ID_BYTES: usize = 128;

/// The kind of database a connection reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbType {
    /// InfluxDB 1.x over its HTTP API (`db_type = "influx"`).
    Influx,
    /// PostgreSQL (`db_type = "postgres"`).
    Postgres,
    /// This server's own store, whatever its backend (`db_type = "datanexus"`).
    Datanexus,
}

impl DbType {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DbType::Influx => "influx",
            DbType::Postgres => "postgres",
            DbType::Datanexus => "datanexus",
        }
    }

    /// Parses an API name; the message of an unknown one lists the known ones (and says
    /// why MongoDB is not among them).
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "influx" | "influxdb" => Ok(DbType::Influx),
            "postgres" | "postgresql" => Ok(DbType::Postgres),
            "datanexus" => Ok(DbType::Datanexus),
            "mongo" | "mongodb" => Err(Error::Invalid(
                "db_type \"mongo\" is not supported: Data Nexus reads influx, postgres and \
                 datanexus (its own store); MongoDB is not built in"
                    .to_owned(),
            )),
            other => Err(Error::Invalid(format!(
                "unknown db_type {other:?}: expected \"influx\", \"postgres\" or \"datanexus\""
            ))),
        }
    }
}

impl Serialize for DbType {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DbType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DbType::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A connection as registered: the seed's fields. `Debug` never shows the secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// The name the other endpoints use (`connection_id=`).
    pub connection_id: String,
    /// What the connection reaches.
    pub db_type: DbType,
    /// `http://host:8086` (InfluxDB), `postgres://user:password@host:5432/db` (or the
    /// key=value form; `sslmode`, `sslrootcert` as for the store); empty for
    /// `datanexus`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// An InfluxDB token (`Authorization: Token …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The InfluxDB organisation (kept for the seed's clients; InfluxDB 1.x has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The database read by default (InfluxDB database, PostgreSQL database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The user to log in as (over the URL's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password (over the URL's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for ConnectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("ConnectionSpec")
            .field("connection_id", &self.connection_id)
            .field("db_type", &self.db_type)
            .field("url", &redact_url(&self.url))
            .field("token", &secret(&self.token))
            .field("org", &self.org)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .finish()
    }
}

impl ConnectionSpec {
    /// A spec with only the id, the type and the URL.
    pub fn new(connection_id: impl Into<String>, db_type: DbType, url: impl Into<String>) -> Self {
        ConnectionSpec {
            connection_id: connection_id.into(),
            db_type,
            url: url.into(),
            token: None,
            org: None,
            database: None,
            username: None,
            password: None,
        }
    }

    /// Checks the spec and normalises it: empty optional fields count as absent.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field at fault.
    pub fn validated(mut self) -> Result<Self> {
        for field in [
            &mut self.token,
            &mut self.org,
            &mut self.database,
            &mut self.username,
            &mut self.password,
        ] {
            if field.as_deref() == Some("") {
                *field = None;
            }
        }
        check_id(&self.connection_id)?;
        match self.db_type {
            DbType::Influx => {
                if self.url.is_empty() {
                    return Err(Error::Invalid(
                        "url is required for db_type \"influx\" (e.g. http://127.0.0.1:8086)"
                            .to_owned(),
                    ));
                }
                crate::influx::Endpoint::parse(&self.url)?;
                if self.password.is_some() && self.username.is_none() {
                    return Err(Error::Invalid(
                        "password without username: InfluxDB logs in with both".to_owned(),
                    ));
                }
            }
            DbType::Postgres => {
                if self.url.is_empty() {
                    return Err(Error::Invalid(
                        "url is required for db_type \"postgres\" \
                         (e.g. postgres://user@127.0.0.1:5432/db)"
                            .to_owned(),
                    ));
                }
                if self.token.is_some() {
                    return Err(Error::Invalid(
                        "token is not used by PostgreSQL: give username and password".to_owned(),
                    ));
                }
            }
            DbType::Datanexus => {
                let extra = [
                    ("url", !self.url.is_empty()),
                    ("token", self.token.is_some()),
                    ("username", self.username.is_some()),
                    ("password", self.password.is_some()),
                ];
                if let Some((name, _)) = extra.iter().find(|(_, set)| *set) {
                    return Err(Error::Invalid(format!(
                        "{name} is not used by db_type \"datanexus\", which reads this \
                         server's own store"
                    )));
                }
            }
        }
        Ok(self)
    }
}

/// Checks a connection id: 1 to 128 characters of `A-Z a-z 0-9 . _ -`.
///
/// # Errors
/// [`Error::Invalid`] naming the id.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid connection_id {id:?}: 1 to {MAX_ID_BYTES} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// A connection as the API lists it: no secret, only whether there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// The connection's id.
    pub connection_id: String,
    /// What it reaches.
    pub db_type: DbType,
    /// The URL with any password in it replaced by `***`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The InfluxDB organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The database read by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The user it logs in as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Whether a password is set (in `password` or in the URL).
    pub has_password: bool,
    /// Whether a token is set.
    pub has_token: bool,
    /// When it was registered (RFC 3339, UTC).
    pub registered_at: String,
}

/// One registered connection, as in the file.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    spec: ConnectionSpec,
    registered_at: String,
}

impl Entry {
    fn info(&self) -> ConnectionInfo {
        let spec = &self.spec;
        let url = redact_url(&spec.url);
        ConnectionInfo {
            connection_id: spec.connection_id.clone(),
            db_type: spec.db_type,
            has_password: spec.password.is_some() || url != spec.url,
            url,
            org: spec.org.clone(),
            database: spec.database.clone(),
            username: spec.username.clone(),
            has_token: spec.token.is_some(),
            registered_at: self.registered_at.clone(),
        }
    }
}

/// The file's content.
#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    connections: Vec<Entry>,
}

/// The version of the file format written.
const FILE_VERSION: u32 = 1;

/// The registry of connections.
#[derive(Debug)]
pub struct Connections {
    file: Option<PathBuf>,
    entries: tokio::sync::Mutex<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("spec", &self.spec)
            .field("registered_at", &self.registered_at)
            .finish()
    }
}

impl Connections {
    /// Opens the registry kept in `file` (created on the first registration); `None`
    /// keeps it in memory only (tests).
    ///
    /// # Errors
    /// The file cannot be read or is not a registry.
    pub fn open(file: Option<PathBuf>) -> Result<Self> {
        let mut entries = BTreeMap::new();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let parsed: File = serde_json::from_slice(&bytes).map_err(|e| {
                        Error::Invalid(format!(
                            "{}: not a connection registry: {e}",
                            path.display()
                        ))
                    })?;
                    if parsed.version > FILE_VERSION {
                        return Err(Error::Invalid(format!(
                            "{}: written by a newer datanexus (format {}, this one reads {FILE_VERSION})",
                            path.display(),
                            parsed.version
                        )));
                    }
                    for entry in parsed.connections {
                        entries.insert(entry.spec.connection_id.clone(), entry);
                    }
                    restrict(path)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(path)(e)),
            }
        }
        Ok(Connections {
            file,
            entries: tokio::sync::Mutex::new(entries),
        })
    }

    /// Every connection, sorted by id, without secrets.
    pub async fn list(&self) -> Vec<ConnectionInfo> {
        self.entries
            .lock()
            .await
            .values()
            .map(Entry::info)
            .collect()
    }

    /// The connection `id`, secrets included (for the code that connects).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn get(&self, id: &str) -> Result<ConnectionSpec> {
        self.entries
            .lock()
            .await
            .get(id)
            .map(|e| e.spec.clone())
            .ok_or_else(|| not_found(id))
    }

    /// Registers `spec` once `check` (reaching its database) succeeds, and once it is
    /// on disk.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad spec or when `check` fails (its cause),
    /// [`Error::Conflict`] when the id is taken, [`Error::Io`] when the file cannot be
    /// written (nothing is registered then).
    pub async fn register<F>(
        &self,
        spec: ConnectionSpec,
        check: impl FnOnce(ConnectionSpec) -> F,
    ) -> Result<ConnectionInfo>
    where
        F: Future<Output = Result<()>>,
    {
        let spec = spec.validated()?;
        let id = spec.connection_id.clone();
        if self.entries.lock().await.contains_key(&id) {
            return Err(taken(&id));
        }
        check(spec.clone()).await.map_err(|e| match e {
            Error::Unreachable(m) => Error::Invalid(m),
            other => other,
        })?;
        let mut entries = self.entries.lock().await;
        if entries.contains_key(&id) {
            return Err(taken(&id));
        }
        let entry = Entry {
            spec,
            registered_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let info = entry.info();
        let mut next = entries.clone();
        next.insert(id, entry);
        self.persist(&next).await?;
        *entries = next;
        tracing::info!(connection_id = %info.connection_id, db_type = info.db_type.as_str(), "connection registered");
        Ok(info)
    }

    /// Removes the connection `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`], or [`Error::Io`] when the file cannot be written (the
    /// connection stays then).
    pub async fn remove(&self, id: &str) -> Result<ConnectionInfo> {
        let mut entries = self.entries.lock().await;
        let mut next = entries.clone();
        let removed = next.remove(id).ok_or_else(|| not_found(id))?;
        self.persist(&next).await?;
        *entries = next;
        tracing::info!(connection_id = %id, "connection removed");
        Ok(removed.info())
    }

    /// Writes `entries` to the file (see the module docs).
    async fn persist(&self, entries: &BTreeMap<String, Entry>) -> Result<()> {
        let Some(path) = self.file.clone() else {
            return Ok(());
        };
        let file = File {
            version: FILE_VERSION,
            connections: entries.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        tokio::task::spawn_blocking(move || write_private(&path, &bytes))
            .await
            .map_err(|e| Error::Io {
                path: "connections".to_owned(),
                source: std::io::Error::other(e),
            })?
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no connection {id:?} is registered"))
}

fn taken(id: &str) -> Error {
    Error::Conflict(format!(
        "connection {id:?} is already registered (remove it first)"
    ))
}

/// Writes `bytes` to `path` through a fsynced temporary file of mode 0600, renamed over
/// it, then fsyncs the directory.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(".tmp");
    let temp = PathBuf::from(temp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_error(&temp))?;
    // An older temporary file keeps its mode: make sure.
    restrict(&temp)?;
    f.write_all(bytes).map_err(io_error(&temp))?;
    f.sync_all().map_err(io_error(&temp))?;
    drop(f);
    std::fs::rename(&temp, path).map_err(io_error(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Makes `path` readable and writable by its owner only.
fn restrict(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_error(path))
}

/// `url` with any password in it replaced by `***`: the password of the user info of a
/// URL (`scheme://user:password@host`) and `password=` parameters (query string or
/// PostgreSQL's key=value form, quoted or not).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = rest..rest + at;
            if let Some(colon) = out[userinfo.clone()].find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    redact_parameter(&out, "password")
}

/// Replaces the value of every `name=value` in `s` (a value ends at `&`, whitespace or
/// the end; a value in single quotes at its closing quote).
fn redact_parameter(s: &str, name: &str) -> String {
    let key = format!("{name}=");
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(&key) {
        let starts_word = i == 0
            || rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c == '?' || c == '&' || c.is_whitespace());
        out.push_str(&rest[..i + key.len()]);
        rest = &rest[i + key.len()..];
        if !starts_word {
            continue;
        }
        let end = if let Some(quoted) = rest.strip_prefix('\'') {
            // Up to the closing quote (a backslash escapes the next character).
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => {
                        end = j + 1;
                        break;
                    }
                    _ => {}
                }
            }
            1 + end
        } else {
            rest.find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(rest.len())
        };
        out.push_str("***");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, db_type: DbType, url: &str) -> ConnectionSpec {
        ConnectionSpec::new(id, db_type, url)
    }

    async fn reachable(_: ConnectionSpec) -> Result<()> {
        Ok(())
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://me:s3cr:et@db:5432/x?sslmode=require"),
            "postgres://me:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redact_url("postgres://me@db/x"), "postgres://me@db/x");
        assert_eq!(
            redact_url("postgres://db/x?user=me&password=pw&sslmode=disable"),
            "postgres://db/x?user=me&password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("host=db password='a b\\' c' user=me"),
            "host=db password=*** user=me"
        );
        assert_eq!(
            redact_url("host=db password=pw user=me"),
            "host=db password=*** user=me"
        );
        assert_eq!(
            redact_url("http://u:p@influx:8086"),
            "http://u:***@influx:8086"
        );
        // A path containing @ after the authority is not user info.
        assert_eq!(
            redact_url("http://influx:8086/a@b"),
            "http://influx:8086/a@b"
        );
        assert_eq!(redact_url("x=1 mypassword=keep"), "x=1 mypassword=keep");
    }

    #[test]
    fn specs_are_checked() {
        let bad = |s: ConnectionSpec| match s.validated() {
            Err(Error::Invalid(m)) => m,
            other => panic!("accepted: {other:?}"),
        };
        assert!(bad(spec("", DbType::Postgres, "postgres://h/d")).contains("connection_id"));
        assert!(bad(spec("a/b", DbType::Postgres, "postgres://h/d")).contains("a/b"));
        assert!(bad(spec(&"x".repeat(129), DbType::Postgres, "postgres://h/d")).contains("128"));
        assert!(bad(spec("p", DbType::Postgres, "")).contains("url is required"));
        assert!(bad(spec("i", DbType::Influx, "")).contains("url is required"));
        assert!(bad(spec("i", DbType::Influx, "ftp://h")).contains("http://"));
        let mut own = spec("own", DbType::Datanexus, "");
        own.password = Some("x".to_owned());
        assert!(bad(own).contains("password is not used"));
        assert!(bad(spec("own", DbType::Datanexus, "http://h")).contains("url is not used"));
        // Empty optional fields are absent.
        let mut s = spec("ok-1.a_b", DbType::Postgres, "postgres://h/d");
        s.token = Some(String::new());
        assert_eq!(s.validated().unwrap().token, None);
    }

    #[test]
    fn db_types_parse_with_helpful_errors() {
        assert_eq!(DbType::parse("influx").unwrap(), DbType::Influx);
        assert_eq!(DbType::parse("postgresql").unwrap(), DbType::Postgres);
        let e = DbType::parse("mongo").unwrap_err().to_string();
        assert!(e.contains("MongoDB is not built in"), "{e}");
        let e = DbType::parse("oracle").unwrap_err().to_string();
        assert!(e.contains("\"oracle\""), "{e}");
        let e = serde_json::from_str::<ConnectionSpec>(
            r#"{"connection_id":"a","db_type":"mongo","url":"mongodb://h"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("MongoDB"), "{e}");
        let e = serde_json::from_str::<ConnectionSpec>(
            r#"{"connection_id":"a","db_type":"postgres","urll":"x"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("urll"), "{e}");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut s = spec("p", DbType::Postgres, "postgres://me:hunter2@h/d");
        s.password = Some("pw-secret".to_owned());
        s.token = Some("tok-secret".to_owned());
        let shown = format!("{s:?}");
        for secret in ["hunter2", "pw-secret", "tok-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[tokio::test]
    async fn registrations_survive_a_reopen_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connections.json");
        let registry = Connections::open(Some(path.clone())).unwrap();
        let mut s = spec("pg", DbType::Postgres, "postgres://me:hunter2@h/d");
        s.password = Some("pw-secret".to_owned());
        let info = registry.register(s.clone(), reachable).await.unwrap();
        assert!(info.has_password);
        assert_eq!(info.url, "postgres://me:***@h/d");
        registry
            .register(spec("own", DbType::Datanexus, ""), reachable)
            .await
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let reopened = Connections::open(Some(path.clone())).unwrap();
        let ids: Vec<String> = reopened
            .list()
            .await
            .into_iter()
            .map(|c| c.connection_id)
            .collect();
        assert_eq!(ids, ["own", "pg"]);
        assert_eq!(reopened.get("pg").await.unwrap(), s.validated().unwrap());
        let listed = serde_json::to_string(&reopened.list().await).unwrap();
        for secret in ["hunter2", "pw-secret"] {
            assert!(!listed.contains(secret), "{listed}");
        }

        reopened.remove("pg").await.unwrap();
        assert!(matches!(
            reopened.remove("pg").await,
            Err(Error::NotFound(_))
        ));
        let again = Connections::open(Some(path)).unwrap();
        assert_eq!(again.list().await.len(), 1);
    }

    #[tokio::test]
    async fn duplicates_and_unreachable_databases_are_refused() {
        let registry = Connections::open(None).unwrap();
        registry
            .register(spec("a", DbType::Datanexus, ""), reachable)
            .await
            .unwrap();
        let e = registry
            .register(spec("a", DbType::Datanexus, ""), reachable)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        let e = registry
            .register(spec("b", DbType::Postgres, "postgres://h/d"), |_| async {
                Err(Error::Unreachable(
                    "postgresql at h:5432/d: refused".to_owned(),
                ))
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("refused")),
            "{e}"
        );
        assert!(matches!(registry.get("b").await, Err(Error::NotFound(_))));
    }

    #[test]
    fn a_registry_of_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connections.json");
        std::fs::write(&path, r#"{"version": 9, "connections": []}"#).unwrap();
        let e = Connections::open(Some(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer"), "{e}");
        std::fs::write(&path, "not json").unwrap();
        let e = Connections::open(Some(path)).unwrap_err().to_string();
        assert!(e.contains("not a connection registry"), "{e}");
    }
}

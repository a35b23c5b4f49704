//! Reaching a connection's database with its credentials (what registering checks).

use std::time::Duration;

use datanexus_store::Store;

use crate::influx::Influx;
use crate::{ConnectionSpec, DbType, Error, Result};

/// Checks that `spec`'s database answers with its credentials within `timeout`:
/// PostgreSQL logs in and runs `SELECT 1`; InfluxDB answers `/ping` and `SHOW
/// DATABASES` with the credentials, and has the `database` when one is named;
/// `datanexus` needs this process's `store` to be ready.
///
/// # Errors
/// [`Error::Unreachable`] naming the server and the cause; [`Error::Invalid`] for a bad
/// URL or a database the server does not have.
pub async fn ping(
    spec: &ConnectionSpec,
    store: Option<&dyn Store>,
    timeout: Duration,
) -> Result<()> {
    let attempt = async {
        match spec.db_type {
            DbType::Postgres => ping_postgres(spec, timeout).await,
            DbType::Influx => ping_influx(spec).await,
            DbType::Datanexus => match store {
                Some(store) => store.ready().await.map_err(|e| {
                    Error::Unreachable(format!("this server's store ({}): {e}", store.name()))
                }),
                None => Err(Error::Unreachable(
                    "this process has no store (role gateway or processor): register \
                     datanexus connections on the process with role store or all"
                        .to_owned(),
                )),
            },
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Error::Unreachable(format!(
            "{} connection {:?}: no answer within {}",
            spec.db_type.as_str(),
            spec.connection_id,
            humantime_secs(timeout)
        ))),
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

async fn ping_influx(spec: &ConnectionSpec) -> Result<()> {
    let influx = Influx::new(spec)?;
    influx.ping().await?;
    let databases = influx.databases().await?;
    if let Some(db) = &spec.database
        && !databases.iter().any(|d| d == db)
    {
        return Err(Error::Invalid(format!(
            "{} has no database {db:?} (it has: {})",
            influx.name(),
            databases.join(", ")
        )));
    }
    Ok(())
}

#[cfg(feature = "postgres")]
async fn ping_postgres(spec: &ConnectionSpec, timeout: Duration) -> Result<()> {
    let login = datanexus_store_postgres::Login {
        user: spec.username.clone(),
        password: spec.password.clone(),
        dbname: spec.database.clone(),
    };
    let (client, name) = datanexus_store_postgres::connect(&spec.url, &login, timeout)
        .await
        .map_err(store_error)?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| store_error(datanexus_store_postgres::error(&name, e)))?;
    Ok(())
}

#[cfg(not(feature = "postgres"))]
async fn ping_postgres(_: &ConnectionSpec, _: Duration) -> Result<()> {
    Err(Error::Invalid(
        "this datanexus was built without the postgres feature".to_owned(),
    ))
}

/// A PostgreSQL failure as ours: a bad URL stays invalid, the rest is unreachable.
#[cfg(feature = "postgres")]
fn store_error(e: datanexus_store::Error) -> Error {
    match e {
        datanexus_store::Error::Invalid(m) => Error::Invalid(m),
        other => Error::Unreachable(other.to_string()),
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;
    use datanexus_store_postgres::testkit::PrivateCluster;

    fn pg(url: &str) -> ConnectionSpec {
        ConnectionSpec::new("pg", DbType::Postgres, url)
    }

    #[tokio::test]
    async fn postgres_connections_are_checked_with_their_credentials() {
        let Some(cluster) = PrivateCluster::start() else {
            return;
        };
        let t = Duration::from_secs(10);
        let url = cluster.url("postgres");
        ping(&pg(&url), None, t).await.unwrap();
        // A wrong password over the URL's: refused, and the message names the server
        // and the cause, never the password.
        let mut wrong = pg(&url);
        wrong.password = Some("not-the-password".to_owned());
        let e = ping(&wrong, None, t).await.unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::Unreachable(_)), "{m}");
        assert!(m.contains("password authentication failed"), "{m}");
        assert!(m.contains(&format!("127.0.0.1:{}", cluster.port())), "{m}");
        assert!(!m.contains("not-the-password"), "{m}");
        // A database the server does not have.
        let mut missing = pg(&url);
        missing.database = Some("dn_no_such_database".to_owned());
        let m = ping(&missing, None, t).await.unwrap_err().to_string();
        assert!(m.contains("dn_no_such_database"), "{m}");
        // Nothing listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = ping(&pg(&format!("postgres://u@127.0.0.1:{port}/d")), None, t)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Unreachable(m) if m.contains(&port.to_string())),
            "{e}"
        );
        // Not a URL.
        let e = ping(&pg("postgres://h/d?bogus=1"), None, t)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("invalid postgres url")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn datanexus_connections_need_a_store() {
        let mut own = pg("");
        own.db_type = DbType::Datanexus;
        let e = ping(&own, None, Duration::from_secs(1)).await.unwrap_err();
        assert!(e.to_string().contains("no store"), "{e}");
    }
}

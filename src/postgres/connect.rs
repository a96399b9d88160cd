//! How compute_ctl connects to its own Postgres as the admin role (`-C/--connstr`): the
//! session settings of `reconcile::admin_config`, completed with the spec's port.

use anyhow::Context;

use super::reconcile::admin_config;

/// The admin connection: `-C` as given, completed with the spec's port.
#[derive(Clone, Debug)]
pub struct AdminConnection {
    base: postgres::Config,
    /// Whether `-C` named a port; if not, the spec's `port` setting is used.
    has_port: bool,
    role: String,
}

impl AdminConnection {
    /// Parses `-C` (URL or key=value). The default host is 127.0.0.1 and the default
    /// database `postgres`.
    pub fn parse(connstr: &str) -> anyhow::Result<AdminConnection> {
        let mut base = admin_config(connstr, &[])
            .map_err(|e| anyhow::anyhow!("{}", e.message))
            .with_context(|| {
                format!("-C/--connstr {connstr:?} is not a valid connection string")
            })?;
        let role = base
            .get_user()
            .map(str::to_string)
            .with_context(|| format!("-C/--connstr {connstr:?} names no user (the admin role)"))?;
        if base.get_hosts().is_empty() {
            base.host("127.0.0.1");
        }
        if base.get_dbname().is_none() {
            base.dbname("postgres");
        }
        let has_port = !base.get_ports().is_empty();
        Ok(AdminConnection {
            base,
            has_port,
            role,
        })
    }

    /// The admin role's name (the superuser `initdb` creates).
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The connection to the compute's Postgres listening on `port`, to database `dbname`
    /// (`None`: the one `-C` names).
    pub fn config(&self, port: u16, dbname: Option<&str>) -> postgres::Config {
        let mut config = self.base.clone();
        if !self.has_port {
            config.port(port);
        }
        if let Some(dbname) = dbname {
            config.dbname(dbname);
        }
        config
    }

    pub fn connect(
        &self,
        port: u16,
        dbname: Option<&str>,
    ) -> Result<postgres::Client, postgres::Error> {
        self.config(port, dbname).connect(postgres::NoTls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_the_seed_connstr() {
        let admin = AdminConnection::parse("postgresql://cloud_admin@localhost/postgres").unwrap();
        assert_eq!(admin.role(), "cloud_admin");
        let config = admin.config(55432, None);
        assert_eq!(config.get_ports(), &[55432]);
        assert_eq!(config.get_dbname(), Some("postgres"));
        assert!(config
            .get_options()
            .unwrap()
            .contains("default_transaction_read_only"));
        let fixed = AdminConnection::parse("postgresql://a@127.0.0.1:6000/db").unwrap();
        assert_eq!(fixed.config(55432, Some("x")).get_ports(), &[6000]);
    }

    #[test]
    fn names_a_missing_user() {
        let err = AdminConnection::parse("postgresql://127.0.0.1/postgres").unwrap_err();
        assert!(format!("{err:#}").contains("names no user"), "{err:#}");
    }
}

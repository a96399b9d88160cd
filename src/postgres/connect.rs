//! How compute_ctl connects to its own Postgres as the admin role (`-C/--connstr`): the
//! session settings of `reconcile::admin_config`, completed with the spec's port; and the
//! roles that are compute_ctl's own there (the admin role, the privileged role).

use anyhow::Context;

use super::privileged::PrivilegedRole;
use super::reconcile::admin_config;

/// The admin connection: `-C` as given, completed with the spec's port.
#[derive(Clone, Debug)]
pub struct AdminConnection {
    /// `-C` as given; the port is rendered into it when it names none.
    connstr: String,
    /// Whether `-C` named a port; if not, the spec's `port` setting is used.
    has_port: bool,
    role: String,
    /// `--privileged-role-name`: the role spec roles become members of.
    privileged: PrivilegedRole,
}

impl AdminConnection {
    /// Parses `-C` (URL or key=value). The default host is 127.0.0.1 and the default
    /// database `postgres`.
    pub fn parse(connstr: &str) -> anyhow::Result<AdminConnection> {
        let base = admin_config(connstr, &[])
            .map_err(|e| anyhow::anyhow!("{}", e.message))
            .with_context(|| {
                format!("-C/--connstr {connstr:?} is not a valid connection string")
            })?;
        let role = base
            .get_user()
            .map(str::to_string)
            .with_context(|| format!("-C/--connstr {connstr:?} names no user (the admin role)"))?;
        Ok(AdminConnection {
            connstr: connstr.trim().to_string(),
            has_port: names_port(connstr),
            role,
            privileged: PrivilegedRole::default(),
        })
    }

    /// With `privileged` as the privileged role; refused when it is the admin role (spec
    /// roles would become members of the superuser).
    pub fn with_privileged_role(
        mut self,
        privileged: PrivilegedRole,
    ) -> anyhow::Result<AdminConnection> {
        if privileged.name() == self.role {
            anyhow::bail!(
                "--privileged-role-name {privileged}: it is the admin role of -C/--connstr; \
                 spec roles become members of the privileged role, so it must be another role"
            );
        }
        self.privileged = privileged;
        Ok(self)
    }

    /// The admin role's name (the superuser `initdb` creates).
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The privileged role (`--privileged-role-name`).
    pub fn privileged_role(&self) -> &PrivilegedRole {
        &self.privileged
    }

    /// The connection to the compute's Postgres listening on `port` (unless `-C` names one),
    /// to database `dbname` (`None`: the one `-C` names, else `postgres`).
    pub fn config(&self, port: u16, dbname: Option<&str>) -> postgres::Config {
        let text = if self.has_port {
            self.connstr.clone()
        } else {
            with_port(&self.connstr, port)
        };
        // `parse` accepted `-C`; the port added to it keeps it valid.
        let mut config = admin_config(&text, &[]).unwrap_or_else(|_| postgres::Config::new());
        if config.get_hosts().is_empty() {
            config.host("127.0.0.1");
        }
        match dbname {
            Some(dbname) => {
                config.dbname(dbname);
            }
            None if config.get_dbname().is_none() => {
                config.dbname("postgres");
            }
            None => {}
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

    /// A failed `connect(port, None)` in words that name where it went: "cannot connect to
    /// 127.0.0.1:5432 as cloud_admin: error connecting to server: Connection refused".
    pub fn connect_error(&self, port: u16, error: &postgres::Error) -> String {
        format!(
            "cannot connect to {}: {}",
            describe(&self.config(port, None)),
            super::error::describe(error)
        )
    }
}

/// Where a connection goes, for messages: `127.0.0.1:5432 as cloud_admin` (each host with its
/// port; a Unix socket as its directory).
pub fn describe(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    let port_of = |i: usize| {
        ports
            .get(i)
            .or(ports.first())
            .copied()
            .unwrap_or(crate::spec::DEFAULT_PORT)
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            postgres::config::Host::Tcp(name) if name.contains(':') => {
                format!("[{name}]:{}", port_of(i))
            }
            postgres::config::Host::Tcp(name) => format!("{name}:{}", port_of(i)),
            postgres::config::Host::Unix(dir) => {
                format!("the socket in {} (port {})", dir.display(), port_of(i))
            }
        })
        .collect();
    let user = config.get_user().unwrap_or("(no user)");
    format!("{} as {user}", hosts.join(", "))
}

/// `connstr` with `port` given to each of its hosts (URL) or as `port=` (key=value); a URL
/// with no host gets 127.0.0.1.
fn with_port(connstr: &str, port: u16) -> String {
    let Some((scheme, rest)) = connstr.split_once("://") else {
        return format!("{connstr} port={port}");
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    let hosts = if hosts.is_empty() {
        format!("127.0.0.1:{port}")
    } else {
        hosts
            .split(',')
            .map(|host| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("{scheme}://{user}{hosts}{tail}")
}

/// Whether a connection string (URL or `key=value`) names a port.
fn names_port(connstr: &str) -> bool {
    let text = connstr.trim();
    let Some(rest) = text
        .strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
    else {
        return text
            .split_whitespace()
            .any(|word| word.split('=').next().is_some_and(|k| k.trim() == "port"));
    };
    let (authority, query) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path.split_once('?').map_or("", |(_, q)| q)),
        None => match rest.split_once('?') {
            Some((authority, query)) => (authority, query),
            None => (rest, ""),
        },
    };
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let in_hosts = hosts.split(',').any(|host| match host.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .is_some_and(|(_, after)| after.starts_with(':')),
        None => host.contains(':'),
    });
    in_hosts || query.split('&').any(|pair| pair.starts_with("port="))
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
        assert_eq!(
            describe(&admin.config(55432, None)),
            "localhost:55432 as cloud_admin"
        );
        assert_eq!(describe(&fixed.config(1, None)), "127.0.0.1:6000 as a");
    }

    #[test]
    fn renders_the_port_into_the_text() {
        assert_eq!(
            with_port("postgresql://u@localhost/postgres", 7),
            "postgresql://u@localhost:7/postgres"
        );
        assert_eq!(
            with_port("postgresql://u@[::1],h2?x=1", 7),
            "postgresql://u@[::1]:7,h2:7?x=1"
        );
        assert_eq!(
            with_port("postgresql://u@", 7),
            "postgresql://u@127.0.0.1:7"
        );
        assert_eq!(with_port("user=u host=h", 7), "user=u host=h port=7");
        let admin = AdminConnection::parse("user=u").unwrap();
        let config = admin.config(7, None);
        assert_eq!(config.get_ports(), &[7]);
        assert_eq!(config.get_dbname(), Some("postgres"));
    }

    #[test]
    fn tells_whether_a_port_is_named() {
        for (connstr, named) in [
            ("postgresql://cloud_admin@localhost/postgres", false),
            ("postgresql://u@127.0.0.1:6000/db", true),
            ("postgres://u@[::1]/db", false),
            ("postgres://u@[::1]:7/db", true),
            ("postgresql://u@h/db?port=9", true),
            ("postgresql://u:p%40ss@h", false),
            ("host=127.0.0.1 user=u", false),
            ("host=127.0.0.1 port=5433 user=u", true),
        ] {
            assert_eq!(names_port(connstr), named, "{connstr}");
        }
    }

    #[test]
    fn names_a_missing_user() {
        let err = AdminConnection::parse("postgresql://127.0.0.1/postgres").unwrap_err();
        assert!(format!("{err:#}").contains("names no user"), "{err:#}");
    }
}

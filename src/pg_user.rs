//! The OS user that runs Postgres when compute_ctl runs as root (Postgres refuses root).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// The account Postgres and its tools run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl PgUser {
    /// `Some(user)` when compute_ctl runs as root and must switch to `name` (`--pg-user`);
    /// `None` when it runs as an ordinary user, who then runs Postgres itself.
    pub fn for_root(name: &str) -> anyhow::Result<Option<PgUser>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        PgUser::lookup(name).map(Some)
    }

    fn lookup(name: &str) -> anyhow::Result<PgUser> {
        let c_name = CString::new(name).context("--pg-user contains a NUL byte")?;
        let mut buffer = vec![0_u8; 16 * 1024];
        // SAFETY: passwd is plain data; getpwnam_r fills it with pointers into `buffer`, which
        // outlives every read below.
        let mut passwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, the buffer length is its real length.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut passwd,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        if rc != 0 {
            bail!(
                "--pg-user {name}: cannot look the user up: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        if found.is_null() {
            bail!("--pg-user {name}: no such OS user (Postgres cannot run as root; create the user or name another)");
        }
        // SAFETY: pw_dir points into `buffer` and is NUL-terminated by getpwnam_r.
        let home = unsafe { std::ffi::CStr::from_ptr(passwd.pw_dir) }
            .to_string_lossy()
            .into_owned();
        Ok(PgUser {
            name: name.to_string(),
            uid: passwd.pw_uid,
            gid: passwd.pw_gid,
            home,
        })
    }

    /// Makes `command` run as this user.
    pub fn apply(&self, command: &mut Command) {
        command
            .uid(self.uid)
            .gid(self.gid)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("HOME", &self.home);
    }

    /// This user's (uid, gid), for `durable::write_atomic_owned`.
    pub fn ids(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// Gives `path` to this user.
    pub fn chown(&self, path: &Path) -> anyhow::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("cannot give {} to OS user {}", path.display(), self.name))
    }
}

/// Runs `command` as `user` when there is one.
pub fn run_as(user: Option<&PgUser>, command: &mut Command) {
    if let Some(user) = user {
        user.apply(command);
    }
}

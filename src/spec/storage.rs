//! Where the compute's data comes from, as the spec selects it: Neon's pageserver and
//! safekeepers, an upstream PostgreSQL server, or the embedded default (a fresh `initdb`).
//!
//! Also the redaction of connection strings, so that no `Debug` output shows a password.

use std::fmt;

use std::collections::BTreeMap;

use super::path::JsonPath;
use super::validate::{shown, Findings};
use super::{ComputeMode, ComputeSpec, PageserverConnectionInfo};

/// Neon's `ShardCount` is a `u8`: a tenant has at most this many shards.
const SHARDS_MAX: usize = u8::MAX as usize;

/// Where the data comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Storage {
    /// None of the below: a fresh `initdb`; the data is ephemeral.
    Embedded,
    /// `upstream_connstring`: a PostgreSQL server to follow (`Replica`) or copy now (`Primary`,
    /// a branch).
    Upstream {
        connstring: String,
        mode: ComputeMode,
        /// `upstream_slot_name`: the replication slot to stream through.
        slot: Option<String>,
    },
    /// Neon's pageserver (basebackup) and safekeepers (WAL).
    Neon {
        /// One libpq connection string a shard, comma-separated in shard order (Neon's
        /// `neon.pageserver_connstring`); shard 0 serves the base backup.
        pageserver_connstring: String,
        /// The stripe size (pages) of a sharded tenant, written as `neon.stripe_size`; `None`
        /// for an unsharded one.
        stripe_size: Option<u32>,
        /// Empty for `Replica` and `Static` computes that were given none.
        safekeepers: Vec<String>,
        /// 32 lowercase hex digits.
        tenant_id: String,
        /// 32 lowercase hex digits.
        timeline_id: String,
        /// `storage_auth_token`: the password to the pageserver and safekeepers.
        auth_token: Option<String>,
        mode: ComputeMode,
    },
}

impl Storage {
    /// `embedded`, `upstream` or `neon`.
    pub fn kind(&self) -> &'static str {
        match self {
            Storage::Embedded => "embedded",
            Storage::Upstream { .. } => "upstream",
            Storage::Neon { .. } => "neon",
        }
    }

    /// Neon's tenant id, for `GET /status`.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Storage::Neon { tenant_id, .. } => Some(tenant_id),
            Storage::Embedded | Storage::Upstream { .. } => None,
        }
    }

    /// Neon's timeline id, for `GET /status`.
    pub fn timeline_id(&self) -> Option<&str> {
        match self {
            Storage::Neon { timeline_id, .. } => Some(timeline_id),
            Storage::Embedded | Storage::Upstream { .. } => None,
        }
    }

    /// The compute's mode (`Primary` for the embedded default).
    pub fn mode(&self) -> ComputeMode {
        match self {
            Storage::Embedded => ComputeMode::Primary,
            Storage::Upstream { mode, .. } | Storage::Neon { mode, .. } => *mode,
        }
    }
}

/// One line for a person: the kind, the mode and where from. Never a password or token.
impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Embedded => f.write_str("embedded: fresh initdb, ephemeral data"),
            Storage::Upstream {
                connstring, mode, ..
            } => {
                write!(f, "upstream {}", mode_words(mode))?;
                match upstream_address(connstring) {
                    Some(address) => write!(f, " from {address}"),
                    None => Ok(()),
                }
            }
            Storage::Neon {
                tenant_id,
                timeline_id,
                safekeepers,
                mode,
                ..
            } => write!(
                f,
                "neon {}, tenant {tenant_id}, timeline {timeline_id}, {} safekeepers",
                mode_words(mode),
                safekeepers.len()
            ),
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Embedded => f.write_str("Embedded"),
            Storage::Upstream {
                connstring,
                mode,
                slot,
            } => f
                .debug_struct("Upstream")
                .field("connstring", &redact_connstring(connstring))
                .field("mode", mode)
                .field("slot", slot)
                .finish(),
            Storage::Neon {
                pageserver_connstring,
                stripe_size,
                safekeepers,
                tenant_id,
                timeline_id,
                auth_token,
                mode,
            } => f
                .debug_struct("Neon")
                .field(
                    "pageserver_connstring",
                    &redact_connstring(pageserver_connstring),
                )
                .field("stripe_size", stripe_size)
                .field("safekeepers", safekeepers)
                .field("tenant_id", tenant_id)
                .field("timeline_id", timeline_id)
                .field("auth_token", &auth_token.as_ref().map(|_| Redacted))
                .field("mode", mode)
                .finish(),
        }
    }
}

fn mode_words(mode: &ComputeMode) -> String {
    match mode {
        ComputeMode::Primary => "primary".to_string(),
        ComputeMode::Replica => "replica".to_string(),
        ComputeMode::Static(lsn) => format!("static at {lsn}"),
    }
}

/// `host:port` of an upstream connection string, for messages.
fn upstream_address(connstring: &str) -> Option<String> {
    let config = crate::postgres::tls::parse(connstring).ok()?.config;
    let host = match config.get_hosts().first()? {
        postgres::config::Host::Tcp(host) => host.clone(),
        postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    Some(match config.get_ports().first() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// Stands for a secret in `Debug` output.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A connection string with its password replaced by `***`: the URL's `user:password@` and
/// `?password=`, or the `password=` pair of the key=value form. Text that is neither form is
/// replaced whole, since it cannot be told what part of it is secret.
pub(crate) fn redact_connstring(connstring: &str) -> String {
    if let Some(scheme_end) = connstring.find("://") {
        redact_url(connstring, scheme_end + 3)
    } else {
        redact_key_values(connstring).unwrap_or_else(|| "<unparsable connection string>".into())
    }
}

fn redact_url(url: &str, authority_start: usize) -> String {
    let (head, rest) = url.split_at(authority_start);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = head.to_string();
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, hosts) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(hosts);
        }
        None => out.push_str(authority),
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// libpq's key=value form, re-written with the password's value replaced; `None` when the
/// text does not follow the form.
fn redact_key_values(text: &str) -> Option<String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            value.push('\'');
            loop {
                let c = chars.next()?;
                value.push(c);
                match c {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
                if c == '\\' {
                    value.push(chars.next()?);
                }
            }
        }
        if key.eq_ignore_ascii_case("password") {
            value = "***".to_string();
        }
        pairs.push(format!("{key}={value}"));
    }
    Some(pairs.join(" "))
}

/// A value and the path it came from: a top-level field, or a `neon.*` setting (Neon's older
/// spec format, which it still reads).
struct Sourced<'a> {
    value: &'a str,
    path: String,
}

/// Decides the storage of a spec, recording each reason it cannot be decided in `findings`.
/// `None` when there was any.
pub(crate) fn resolve(spec: &ComputeSpec, findings: &mut Findings) -> Option<Storage> {
    let errors_before = findings.len();
    let storage = if let Some(connstring) = spec.upstream_connstring.as_deref() {
        resolve_upstream(spec, connstring, findings)
    } else if spec.pageserver_connection_info.is_some() || pageserver_connstring(spec).is_some() {
        resolve_neon(spec, findings)
    } else {
        resolve_embedded(spec, findings)
    };
    if findings.len() > errors_before {
        None
    } else {
        storage
    }
}

/// The first setting with exactly this name that has a value, and its path.
fn setting<'a>(spec: &'a ComputeSpec, name: &str) -> Option<Sourced<'a>> {
    spec.cluster
        .settings()
        .iter()
        .enumerate()
        .find(|(_, setting)| setting.name == name)
        .and_then(|(i, setting)| {
            setting.value.as_deref().map(|value| Sourced {
                value,
                path: format!("cluster.settings[{i}].value"),
            })
        })
}

fn field<'a>(value: Option<&'a String>, path: &str) -> Option<Sourced<'a>> {
    value.map(|value| Sourced {
        value,
        path: path.to_string(),
    })
}

fn pageserver_connstring(spec: &ComputeSpec) -> Option<Sourced<'_>> {
    field(spec.pageserver_connstring.as_ref(), "pageserver_connstring")
        .or_else(|| setting(spec, "neon.pageserver_connstring"))
}

fn resolve_upstream(
    spec: &ComputeSpec,
    connstring: &str,
    findings: &mut Findings,
) -> Option<Storage> {
    let mut neon_fields = Vec::new();
    if spec.pageserver_connection_info.is_some() {
        neon_fields.push("pageserver_connection_info");
    }
    if spec.pageserver_connstring.is_some() {
        neon_fields.push("pageserver_connstring");
    } else if setting(spec, "neon.pageserver_connstring").is_some() {
        neon_fields.push("the neon.pageserver_connstring setting");
    }
    if !spec.safekeeper_connstrings.is_empty() {
        neon_fields.push("safekeeper_connstrings");
    }
    if spec.tenant_id.is_some() {
        neon_fields.push("tenant_id");
    }
    if spec.timeline_id.is_some() {
        neon_fields.push("timeline_id");
    }
    if !neon_fields.is_empty() {
        findings.add(
            "upstream_connstring",
            format!(
                "an upstream server cannot be combined with Neon's storage ({}): the data comes \
                 from one or the other",
                neon_fields.join(", ")
            ),
        );
    }
    if connstring.trim().is_empty() {
        findings.add("upstream_connstring", "the connection string is empty");
    } else if let Err(reason) = crate::postgres::tls::parse(connstring) {
        // The parser's messages name options, never their values.
        findings.add(
            "upstream_connstring",
            format!(
                "not a PostgreSQL connection string (a postgresql:// URL or key=value pairs): \
                 {reason}"
            ),
        );
    }
    if let ComputeMode::Static(lsn) = spec.mode {
        findings.add(
            "mode",
            format!(
                "a vanilla upstream cannot serve pages as of an old LSN ({lsn}): Static needs \
                 Neon's pageserver; use Primary (a copy taken now) or Replica"
            ),
        );
    }
    if let Some(slot) = spec.upstream_slot_name.as_deref() {
        check_slot_name(slot, findings);
    }
    refuse_embedded_opt_in(spec, "an upstream server (upstream_connstring)", findings);
    Some(Storage::Upstream {
        connstring: connstring.to_string(),
        mode: spec.mode,
        slot: spec.upstream_slot_name.clone(),
    })
}

/// Postgres's rule for replication slot names (`ReplicationSlotValidateName`).
fn check_slot_name(slot: &str, findings: &mut Findings) {
    const NAME_BYTES_MAX: usize = 63;
    if slot.is_empty() || slot.len() > NAME_BYTES_MAX {
        findings.add(
            "upstream_slot_name",
            format!("a replication slot name has 1 to {NAME_BYTES_MAX} characters"),
        );
    } else if !slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        findings.add(
            "upstream_slot_name",
            "a replication slot name has only lower case letters, digits and underscores",
        );
    }
}

/// `embedded_storage: true` beside another storage: the sender asked for two things.
fn refuse_embedded_opt_in(spec: &ComputeSpec, other: &str, findings: &mut Findings) {
    if spec.embedded_storage {
        findings.add(
            "embedded_storage",
            format!(
                "the embedded default cannot be combined with {other}: the data comes from one \
                 or the other"
            ),
        );
    }
}

/// The pageservers, as Neon's `ParsedSpec::try_from` (compute_tools/src/compute.rs) looks
/// for them: `pageserver_connection_info` first; without it `pageserver_connstring` with
/// `shard_stripe_size`; without that the `neon.pageserver_connstring` setting with the
/// `neon.stripe_size` setting. Returns the comma-separated connection strings and the stripe
/// size.
fn pageservers(spec: &ComputeSpec, findings: &mut Findings) -> Option<(String, Option<u32>)> {
    if let Some(info) = spec.pageserver_connection_info.as_ref() {
        return from_connection_info(info, findings);
    }
    if let Some(connstring) = field(spec.pageserver_connstring.as_ref(), "pageserver_connstring") {
        return from_connstring(connstring, spec.shard_stripe_size, findings);
    }
    let connstring = setting(spec, "neon.pageserver_connstring")?;
    let stripe_size = match setting(spec, "neon.stripe_size") {
        None => None,
        Some(given) => match given.value.trim().parse::<u32>() {
            Ok(size) => Some(size),
            Err(_) => {
                findings.add(
                    given.path,
                    format!(
                        "invalid neon.stripe_size {}: expected a number of pages from 0 to {}",
                        shown(given.value),
                        u32::MAX
                    ),
                );
                return None;
            }
        },
    };
    from_connstring(connstring, stripe_size, findings)
}

/// Neon's `PageserverConnectionInfo::from_connstr` (libs/compute_api/src/spec.rs): one
/// connection string is an unsharded tenant; more, comma-separated, are its shards in order
/// and need a stripe size, or the compute would send pages to the wrong shard.
fn from_connstring(
    connstring: Sourced<'_>,
    stripe_size: Option<u32>,
    findings: &mut Findings,
) -> Option<(String, Option<u32>)> {
    if connstring.value.trim().is_empty() {
        findings.add(connstring.path, "the pageserver connection string is empty");
        return None;
    }
    let shards = connstring.value.split(',').count();
    if shards == 1 {
        return Some((connstring.value.to_string(), None));
    }
    if shards > SHARDS_MAX {
        findings.add(
            connstring.path,
            format!("{shards} shards: Neon's tenants have at most {SHARDS_MAX}"),
        );
        return None;
    }
    let Some(size) = stripe_size else {
        let stripe_name = if connstring.path == "pageserver_connstring" {
            "shard_stripe_size"
        } else {
            "the neon.stripe_size setting"
        };
        findings.add(
            connstring.path,
            format!(
                "{shards} shards but no stripe_size: a comma-separated list of pageservers names \
                 the shards of a sharded tenant, which needs {stripe_name}"
            ),
        );
        return None;
    };
    Some((connstring.value.to_string(), Some(size)))
}

/// Neon's newer form, read as Neon's `write_postgres_conf` (compute_tools/src/config.rs) reads
/// it: shards 0 to `shard_count - 1` (one shard when unsharded, count 0), each with at least
/// one pageserver, the first of which serves it; their libpq URLs joined by commas make the
/// `neon.pageserver_connstring`.
fn from_connection_info(
    info: &PageserverConnectionInfo,
    findings: &mut Findings,
) -> Option<(String, Option<u32>)> {
    const PATH: &str = "pageserver_connection_info";
    let errors_before = findings.len();
    let shard_path = |key: &str| {
        let mut path = JsonPath::default();
        path.push_key(PATH);
        path.push_key("shards");
        path.push_key(key);
        path.into_string()
    };
    // The keys are Neon's `ShardIndex`: shard number and shard count, a byte each, in hex.
    let mut by_index: BTreeMap<(u8, u8), &str> = BTreeMap::new();
    for key in info.shards.keys() {
        match parse_shard_index(key) {
            Some(index) => {
                by_index.insert(index, key);
            }
            None => findings.add(
                shard_path(key),
                format!(
                    "invalid shard index {}: expected 4 hex digits, the shard number then the \
                     shard count (\"0000\" for an unsharded tenant)",
                    shown(key)
                ),
            ),
        }
    }
    // Neon's invariant: a stripe size exactly when the tenant is sharded.
    if info.shard_count > 0 && info.stripe_size.is_none() {
        findings.add(
            format!("{PATH}.stripe_size"),
            format!(
                "shard_count is {} but no stripe_size: a sharded tenant needs it (Neon's \
                 invariant: shard_count 0 is unsharded, any other count has a stripe size)",
                info.shard_count
            ),
        );
    }
    let shard_count = info.shard_count.max(1);
    let mut urls = Vec::new();
    for number in 0..shard_count {
        let wanted = format!("{number:02x}{:02x}", info.shard_count);
        let Some(key) = by_index.get(&(number, info.shard_count)) else {
            findings.add(
                format!("{PATH}.shards"),
                format!("shard {wanted} missing from pageserver_connection_info shard map"),
            );
            continue;
        };
        let shard = &info.shards[*key];
        let Some(first) = shard.pageservers.first() else {
            findings.add(
                format!("{}.pageservers", shard_path(key)),
                format!("shard {wanted} has no pageserver"),
            );
            continue;
        };
        let url_path = format!("{}.pageservers[0].libpq_url", shard_path(key));
        match first.libpq_url.as_deref() {
            None => findings.add(
                url_path,
                format!(
                    "no libpq_url for shard {wanted}: this compute_ctl reaches the pageserver by \
                     libpq only"
                ),
            ),
            Some(url) if url.trim().is_empty() => {
                findings.add(url_path, "the pageserver connection string is empty");
            }
            // neon.pageserver_connstring separates the shards by commas.
            Some(url) if url.contains(',') => findings.add(
                url_path,
                "a shard's libpq_url names one pageserver: it cannot contain a comma",
            ),
            Some(url) => urls.push(url),
        }
    }
    if findings.len() > errors_before {
        return None;
    }
    let stripe_size = if info.shard_count > 0 {
        info.stripe_size
    } else {
        None
    };
    Some((urls.join(","), stripe_size))
}

/// Neon's `ShardIndex::from_str` (libs/utils/src/shard.rs): 4 hex digits.
fn parse_shard_index(key: &str) -> Option<(u8, u8)> {
    if key.len() != 4 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let number = u8::from_str_radix(&key[..2], 16).ok()?;
    let count = u8::from_str_radix(&key[2..], 16).ok()?;
    Some((number, count))
}

fn resolve_neon(spec: &ComputeSpec, findings: &mut Findings) -> Option<Storage> {
    let pageservers = pageservers(spec, findings);
    refuse_embedded_opt_in(spec, "Neon's storage", findings);
    let tenant_id = neon_id(spec, "tenant", findings);
    let timeline_id = neon_id(spec, "timeline", findings);

    // Neon reads `neon.safekeepers` only when the field is empty.
    let (safekeepers, path) = if !spec.safekeeper_connstrings.is_empty() {
        for (i, address) in spec.safekeeper_connstrings.iter().enumerate() {
            if address.trim().is_empty() {
                findings.add(
                    format!("safekeeper_connstrings[{i}]"),
                    "empty safekeeper address",
                );
            }
        }
        (
            spec.safekeeper_connstrings.clone(),
            "safekeeper_connstrings".to_string(),
        )
    } else if let Some(listed) = setting(spec, "neon.safekeepers") {
        let addresses: Vec<String> = listed
            .value
            .split(',')
            .map(|address| address.trim().to_string())
            .collect();
        let safekeepers = if addresses.iter().all(String::is_empty) {
            Vec::new()
        } else {
            if addresses.iter().any(String::is_empty) {
                findings.add(
                    listed.path.clone(),
                    "empty entry in neon.safekeepers (two commas in a row, or one at an end)",
                );
            }
            addresses
        };
        (safekeepers, listed.path)
    } else {
        (Vec::new(), "safekeeper_connstrings".to_string())
    };

    // Neon's own rule, and its wording: a primary writes WAL to the safekeepers, so it needs a
    // set of them with no address twice. Replicas and static computes read from the
    // pageserver and need none.
    if spec.mode == ComputeMode::Primary {
        if safekeepers.is_empty() {
            findings.add(path.clone(), "safekeeper_connstrings is empty");
        } else {
            let mut sorted: Vec<&String> = safekeepers.iter().collect();
            sorted.sort();
            if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
                findings.add(
                    path.clone(),
                    format!("duplicate entry in safekeeper_connstrings: {}!", pair[1]),
                );
            }
        }
    }
    if spec.upstream_slot_name.is_some() {
        findings.add(
            "upstream_slot_name",
            "a replication slot is for an upstream server (upstream_connstring); Neon's storage \
             has none",
        );
    }
    let (pageserver_connstring, stripe_size) = pageservers?;
    Some(Storage::Neon {
        pageserver_connstring,
        stripe_size,
        safekeepers,
        tenant_id: tenant_id?,
        timeline_id: timeline_id?,
        auth_token: spec.storage_auth_token.clone(),
        mode: spec.mode,
    })
}

/// A Neon tenant or timeline id from its field or its `neon.*` setting: 32 hex digits,
/// returned in lower case (Neon accepts either case and prints lower case).
fn neon_id(spec: &ComputeSpec, what: &str, findings: &mut Findings) -> Option<String> {
    let (field_value, field_path, setting_name) = match what {
        "tenant" => (spec.tenant_id.as_ref(), "tenant_id", "neon.tenant_id"),
        _ => (spec.timeline_id.as_ref(), "timeline_id", "neon.timeline_id"),
    };
    let Some(given) = field(field_value, field_path).or_else(|| setting(spec, setting_name)) else {
        findings.add(
            field_path,
            format!(
                "{what} id should be provided (the {field_path} field or the {setting_name} \
                 setting): Neon's storage needs it"
            ),
        );
        return None;
    };
    if given.value.len() == 32 && given.value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(given.value.to_ascii_lowercase())
    } else {
        findings.add(
            given.path,
            format!(
                "invalid {what} id {}: expected 32 hexadecimal digits",
                super::validate::shown(given.value)
            ),
        );
        None
    }
}

fn resolve_embedded(spec: &ComputeSpec, findings: &mut Findings) -> Option<Storage> {
    // Neon's fields without a pageserver are half a Neon spec. Falling back to a fresh initdb
    // would hand out an empty, ephemeral database where the sender expects its data.
    let mut stray = Vec::new();
    if !spec.safekeeper_connstrings.is_empty() {
        stray.push("safekeeper_connstrings");
    }
    if spec.tenant_id.is_some() {
        stray.push("tenant_id");
    }
    if spec.timeline_id.is_some() {
        stray.push("timeline_id");
    }
    for name in stray {
        findings.add(
            name,
            "needs pageserver_connstring too (Neon's storage); without it the compute would \
             start from an empty initdb",
        );
    }
    match spec.mode {
        ComputeMode::Primary => {}
        ComputeMode::Replica => findings.add(
            "mode",
            "a Replica needs a primary to follow (upstream_connstring, or Neon's storage \
             fields); the embedded default has nothing to follow",
        ),
        ComputeMode::Static(_) => findings.add(
            "mode",
            "a Static compute reads pages as of an LSN from Neon's pageserver; the embedded \
             default has nothing to follow",
        ),
    }
    if spec.upstream_slot_name.is_some() {
        findings.add(
            "upstream_slot_name",
            "a replication slot needs upstream_connstring",
        );
    }
    // Neon's `ParsedSpec::try_from` (compute_tools/src/compute.rs) refuses a spec without a
    // pageserver. The embedded default is ours; a spec that says nothing at all (no storage,
    // no settings) is more likely a Neon spec cut short than a wish for an empty, ephemeral
    // database, so that one has to ask for it.
    let names_settings = !spec.cluster.settings().is_empty()
        || spec
            .cluster
            .postgresql_conf
            .as_deref()
            .is_some_and(|conf| !conf.trim().is_empty());
    if !spec.embedded_storage && !names_settings {
        findings.add(
            "pageserver_connection_info",
            "pageserver connection information should be provided (pageserver_connection_info, \
             pageserver_connstring or the neon.pageserver_connstring setting, with tenant_id and \
             timeline_id), or upstream_connstring; for the embedded default (a fresh initdb, \
             ephemeral data) say \"embedded_storage\": true or give settings",
        );
    }
    Some(Storage::Embedded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact_connstring("postgresql://rep:s3cret@db.example:5433/postgres?sslmode=require"),
            "postgresql://rep:***@db.example:5433/postgres?sslmode=require"
        );
        assert_eq!(
            redact_connstring("postgres://rep@h1,h2/db?password=s3cret&application_name=x"),
            "postgres://rep@h1,h2/db?password=***&application_name=x"
        );
        assert_eq!(
            redact_connstring("postgresql://u:p@ss@host"),
            "postgresql://u:***@host"
        );
        assert_eq!(redact_connstring("postgresql://host"), "postgresql://host");
    }

    #[test]
    fn redacts_key_value_passwords() {
        assert_eq!(
            redact_connstring("host=h port=5432 password=s3cret user=u"),
            "host=h port=5432 password=*** user=u"
        );
        assert_eq!(
            redact_connstring("host=h password = 'a b\\' c' user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(
            redact_connstring("host=h password='unterminated"),
            "<unparsable connection string>"
        );
        assert_eq!(
            redact_connstring("no equals s3cret"),
            "<unparsable connection string>"
        );
    }

    #[test]
    fn debug_and_display_hide_secrets() {
        let storage = Storage::Neon {
            pageserver_connstring: "host=ps password=pw-secret".into(),
            stripe_size: None,
            safekeepers: vec!["sk1:5454".into()],
            tenant_id: "0".repeat(32),
            timeline_id: "1".repeat(32),
            auth_token: Some("token-secret".into()),
            mode: ComputeMode::Primary,
        };
        for text in [format!("{storage:?}"), storage.to_string()] {
            assert!(!text.contains("pw-secret"), "{text}");
            assert!(!text.contains("token-secret"), "{text}");
        }
        let storage = Storage::Upstream {
            connstring: "postgresql://rep:pw-secret@db:5433/postgres".into(),
            mode: ComputeMode::Replica,
            slot: None,
        };
        assert_eq!(storage.to_string(), "upstream replica from db:5433");
        assert!(!format!("{storage:?}").contains("pw-secret"));
        assert_eq!(storage.kind(), "upstream");
        assert_eq!(storage.mode(), ComputeMode::Replica);
    }
}

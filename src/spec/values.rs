//! Setting values judged as Postgres judges them (`guc.c`'s `parse_bool`, `parse_int`,
//! `parse_real`, `convert_to_base_unit`, `config_enum_lookup_by_name`), against the type and
//! range `postgres --describe-config` prints, so that `shared_buffers = 'banana'` is refused
//! before PGDATA is rebuilt rather than by the postmaster after.
//!
//! `--describe-config` prints a setting's type and its minimum and maximum in its base unit,
//! but neither the unit nor an enum's values: those of PostgreSQL 15 are listed here (from its
//! `pg_settings`; a test compares them with a running server). A setting missing from these
//! lists (another major version's) is still checked for its type and, without a unit, its
//! range; with a unit, or for an enum, its value is left to Postgres.

/// A setting's type, as `--describe-config` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarType {
    Bool,
    Integer,
    Real,
    String,
    Enum,
}

impl VarType {
    pub(crate) fn from_described(text: &str) -> Option<VarType> {
        match text {
            "BOOLEAN" => Some(VarType::Bool),
            "INTEGER" => Some(VarType::Integer),
            "REAL" => Some(VarType::Real),
            "STRING" => Some(VarType::String),
            "ENUM" => Some(VarType::Enum),
            _ => None,
        }
    }
}

/// What `--describe-config` says of one setting.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Described {
    pub context: String,
    pub vartype: Option<VarType>,
    /// In the base unit; `None` for types without a range.
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A setting's base unit (`pg_settings.unit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Bytes,
    Kb,
    Mb,
    /// `8kB`: pages of `BLCKSZ` (and of `XLOG_BLCKSZ`, the same 8192 in a default build).
    Blocks,
    Ms,
    S,
    Min,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "B",
            Unit::Kb => "kB",
            Unit::Mb => "MB",
            Unit::Blocks => "8kB",
            Unit::Ms => "ms",
            Unit::S => "s",
            Unit::Min => "min",
        }
    }

    /// Postgres's conversion table for this base unit, largest unit first: (unit, how many
    /// base units one of it is).
    fn table(self) -> Vec<(&'static str, f64)> {
        const KB: f64 = 1024.0;
        let memory = |base_bytes: f64| {
            vec![
                ("TB", KB * KB * KB * KB / base_bytes),
                ("GB", KB * KB * KB / base_bytes),
                ("MB", KB * KB / base_bytes),
                ("kB", KB / base_bytes),
                ("B", 1.0 / base_bytes),
            ]
        };
        let time = |base_ms: f64| {
            vec![
                ("d", 86_400_000.0 / base_ms),
                ("h", 3_600_000.0 / base_ms),
                ("min", 60_000.0 / base_ms),
                ("s", 1000.0 / base_ms),
                ("ms", 1.0 / base_ms),
                ("us", 0.001 / base_ms),
            ]
        };
        match self {
            Unit::Bytes => memory(1.0),
            Unit::Kb => memory(KB),
            Unit::Mb => memory(KB * KB),
            Unit::Blocks => memory(8.0 * KB),
            Unit::Ms => time(1.0),
            Unit::S => time(1000.0),
            Unit::Min => time(60_000.0),
        }
    }

    fn units_listed(self) -> &'static str {
        match self {
            Unit::Bytes | Unit::Kb | Unit::Mb | Unit::Blocks => "B, kB, MB, GB or TB",
            Unit::Ms | Unit::S | Unit::Min => "us, ms, s, min, h or d",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Unit::Bytes | Unit::Kb | Unit::Mb | Unit::Blocks => "'128MB'",
            Unit::Ms | Unit::S | Unit::Min => "'10s'",
        }
    }
}

/// PostgreSQL 15's settings that have a unit (`pg_settings.unit`).
const UNITS: &[(&str, Unit)] = &[
    ("archive_timeout", Unit::S),
    ("authentication_timeout", Unit::S),
    ("autovacuum_naptime", Unit::S),
    ("autovacuum_vacuum_cost_delay", Unit::Ms),
    ("autovacuum_work_mem", Unit::Kb),
    ("backend_flush_after", Unit::Blocks),
    ("bgwriter_delay", Unit::Ms),
    ("bgwriter_flush_after", Unit::Blocks),
    ("checkpoint_flush_after", Unit::Blocks),
    ("checkpoint_timeout", Unit::S),
    ("checkpoint_warning", Unit::S),
    ("client_connection_check_interval", Unit::Ms),
    ("deadlock_timeout", Unit::Ms),
    ("effective_cache_size", Unit::Blocks),
    ("gin_pending_list_limit", Unit::Kb),
    ("huge_page_size", Unit::Kb),
    ("idle_in_transaction_session_timeout", Unit::Ms),
    ("idle_session_timeout", Unit::Ms),
    ("lock_timeout", Unit::Ms),
    ("log_autovacuum_min_duration", Unit::Ms),
    ("log_min_duration_sample", Unit::Ms),
    ("log_min_duration_statement", Unit::Ms),
    ("log_parameter_max_length", Unit::Bytes),
    ("log_parameter_max_length_on_error", Unit::Bytes),
    ("log_rotation_age", Unit::Min),
    ("log_rotation_size", Unit::Kb),
    ("log_startup_progress_interval", Unit::Ms),
    ("log_temp_files", Unit::Kb),
    ("logical_decoding_work_mem", Unit::Kb),
    ("maintenance_work_mem", Unit::Kb),
    ("max_slot_wal_keep_size", Unit::Mb),
    ("max_stack_depth", Unit::Kb),
    ("max_standby_archive_delay", Unit::Ms),
    ("max_standby_streaming_delay", Unit::Ms),
    ("max_wal_size", Unit::Mb),
    ("min_dynamic_shared_memory", Unit::Mb),
    ("min_parallel_index_scan_size", Unit::Blocks),
    ("min_parallel_table_scan_size", Unit::Blocks),
    ("min_wal_size", Unit::Mb),
    ("old_snapshot_threshold", Unit::Min),
    ("post_auth_delay", Unit::S),
    ("pre_auth_delay", Unit::S),
    ("recovery_min_apply_delay", Unit::Ms),
    ("segment_size", Unit::Blocks),
    ("shared_buffers", Unit::Blocks),
    ("shared_memory_size", Unit::Mb),
    ("statement_timeout", Unit::Ms),
    ("tcp_keepalives_idle", Unit::S),
    ("tcp_keepalives_interval", Unit::S),
    ("tcp_user_timeout", Unit::Ms),
    ("temp_buffers", Unit::Blocks),
    ("temp_file_limit", Unit::Kb),
    ("track_activity_query_size", Unit::Bytes),
    ("vacuum_cost_delay", Unit::Ms),
    ("wal_buffers", Unit::Blocks),
    ("wal_decode_buffer_size", Unit::Bytes),
    ("wal_keep_size", Unit::Mb),
    ("wal_receiver_status_interval", Unit::S),
    ("wal_receiver_timeout", Unit::Ms),
    ("wal_retrieve_retry_interval", Unit::Ms),
    ("wal_segment_size", Unit::Bytes),
    ("wal_sender_timeout", Unit::Ms),
    ("wal_skip_threshold", Unit::Kb),
    ("wal_writer_delay", Unit::Ms),
    ("wal_writer_flush_after", Unit::Blocks),
    ("work_mem", Unit::Kb),
];

/// PostgreSQL 15's enum settings and their values (`pg_settings.enumvals`, which leaves out
/// the hidden ones: see `hidden_enum_value`).
const ENUMS: &[(&str, &[&str])] = &[
    ("archive_mode", &["always", "on", "off"]),
    ("backslash_quote", &["safe_encoding", "on", "off"]),
    ("bytea_output", &["escape", "hex"]),
    (
        "client_min_messages",
        &[
            "debug5", "debug4", "debug3", "debug2", "debug1", "log", "notice", "warning", "error",
        ],
    ),
    ("compute_query_id", &["auto", "regress", "on", "off"]),
    ("constraint_exclusion", &["partition", "on", "off"]),
    ("default_toast_compression", &["pglz", "lz4"]),
    (
        "default_transaction_isolation",
        &[
            "serializable",
            "repeatable read",
            "read committed",
            "read uncommitted",
        ],
    ),
    ("dynamic_shared_memory_type", &["posix", "sysv", "mmap"]),
    ("force_parallel_mode", &["off", "on", "regress"]),
    ("huge_pages", &["off", "on", "try"]),
    (
        "intervalstyle",
        &["postgres", "postgres_verbose", "sql_standard", "iso_8601"],
    ),
    ("log_error_verbosity", &["terse", "default", "verbose"]),
    (
        "log_min_error_statement",
        &[
            "debug5", "debug4", "debug3", "debug2", "debug1", "info", "notice", "warning", "error",
            "log", "fatal", "panic",
        ],
    ),
    (
        "log_min_messages",
        &[
            "debug5", "debug4", "debug3", "debug2", "debug1", "info", "notice", "warning", "error",
            "log", "fatal", "panic",
        ],
    ),
    ("log_statement", &["none", "ddl", "mod", "all"]),
    ("password_encryption", &["md5", "scram-sha-256"]),
    (
        "plan_cache_mode",
        &["auto", "force_generic_plan", "force_custom_plan"],
    ),
    ("recovery_init_sync_method", &["fsync", "syncfs"]),
    ("recovery_prefetch", &["off", "on", "try"]),
    ("recovery_target_action", &["pause", "promote", "shutdown"]),
    ("session_replication_role", &["origin", "replica", "local"]),
    ("shared_memory_type", &["sysv", "mmap"]),
    (
        "ssl_max_protocol_version",
        &["", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"],
    ),
    (
        "ssl_min_protocol_version",
        &["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"],
    ),
    ("stats_fetch_consistency", &["none", "cache", "snapshot"]),
    (
        "synchronous_commit",
        &["local", "remote_write", "remote_apply", "on", "off"],
    ),
    (
        "syslog_facility",
        &[
            "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
        ],
    ),
    (
        "trace_recovery_messages",
        &[
            "debug5", "debug4", "debug3", "debug2", "debug1", "log", "notice", "warning", "error",
        ],
    ),
    ("track_functions", &["none", "pl", "all"]),
    (
        "transaction_isolation",
        &[
            "serializable",
            "repeatable read",
            "read committed",
            "read uncommitted",
        ],
    ),
    ("wal_compression", &["pglz", "lz4", "zstd", "on", "off"]),
    ("wal_level", &["minimal", "replica", "logical"]),
    (
        "wal_sync_method",
        &["fsync", "fdatasync", "open_sync", "open_datasync"],
    ),
    ("xmlbinary", &["base64", "hex"]),
    ("xmloption", &["content", "document"]),
];

/// The PostgreSQL 15 lists this module holds, for the test that compares them with a running
/// server's `pg_settings`: (name, unit) of the settings with a unit, (name, values) of the
/// enums, and the names of the numeric settings without a unit.
pub type Pg15Lists = (
    Vec<(String, String)>,
    Vec<(String, Vec<String>)>,
    Vec<String>,
);

pub fn pg15_lists() -> Pg15Lists {
    (
        UNITS
            .iter()
            .map(|(name, unit)| (name.to_string(), unit.name().to_string()))
            .collect(),
        ENUMS
            .iter()
            .map(|(name, values)| {
                (
                    name.to_string(),
                    values.iter().map(|v| v.to_string()).collect(),
                )
            })
            .collect(),
        PG15_UNITLESS_NUMBERS
            .iter()
            .map(|n| n.to_string())
            .collect(),
    )
}

/// The values Postgres 15 accepts for an enum without listing them: the boolean spellings of
/// enums that have `on` and `off`, `debug` for the message levels, and `wal_level`'s old names.
fn hidden_enum_value(name: &str, values: &[&str], value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let boolean = values.contains(&"on") && values.contains(&"off");
    (boolean && ["true", "false", "yes", "no", "1", "0"].contains(&lower.as_str()))
        || (values.contains(&"debug1") && lower == "debug")
        || (name == "wal_level" && ["archive", "hot_standby"].contains(&lower.as_str()))
}

/// The unit of a PostgreSQL 15 setting, if it has one.
fn unit_of(name: &str) -> Option<Unit> {
    UNITS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, unit)| *unit)
}

/// Checks `value` of setting `name` against what `--describe-config` says of it; the error
/// says what is wrong and what Postgres would take instead.
pub(crate) fn check(name: &str, value: &str, described: &Described) -> Result<(), String> {
    let Some(vartype) = described.vartype else {
        return Ok(());
    };
    match vartype {
        VarType::Bool => match parse_bool(value) {
            Some(_) => Ok(()),
            None => Err(format!(
                "{name}: invalid value {}: a boolean is expected (on, off, true, false, yes, no, 1 or 0)",
                shown(value)
            )),
        },
        VarType::Integer | VarType::Real => check_number(name, value, vartype, described),
        VarType::Enum => {
            let lower = name.to_ascii_lowercase();
            let Some((_, values)) = ENUMS.iter().find(|(known, _)| *known == lower) else {
                return Ok(());
            };
            if values.iter().any(|v| v.eq_ignore_ascii_case(value))
                || hidden_enum_value(&lower, values, value)
            {
                return Ok(());
            }
            let listed: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            Err(format!(
                "{name}: invalid value {}: one of {} is expected",
                shown(value),
                listed.join(", ")
            ))
        }
        VarType::String => Ok(()),
    }
}

fn check_number(
    name: &str,
    value: &str,
    vartype: VarType,
    described: &Described,
) -> Result<(), String> {
    let unit = unit_of(name);
    let kind = if vartype == VarType::Integer {
        "an integer"
    } else {
        "a number"
    };
    let expected = match unit {
        Some(unit) => format!(
            "{kind} is expected, a number of {} or one followed by a unit ({}), as in {}",
            unit.name(),
            unit.units_listed(),
            unit.example()
        ),
        None => format!("{kind} is expected (this setting takes no unit)"),
    };
    let invalid = || format!("{name}: invalid value {}: {expected}", shown(value));
    let (number, rest) = if vartype == VarType::Integer {
        parse_int_prefix(value)
    } else {
        parse_real_prefix(value)
    }
    .ok_or_else(invalid)?;
    let suffix = rest.trim_matches(|c: char| c.is_ascii_whitespace());
    let number = if suffix.is_empty() {
        number
    } else {
        match unit {
            Some(unit) => {
                let table = unit.table();
                let at = table
                    .iter()
                    .position(|(name, _)| *name == suffix)
                    .ok_or_else(invalid)?;
                let mut converted = number * table[at].1;
                // Postgres rounds a fraction ('1.5GB') to the next smaller unit.
                if let Some((_, smaller)) = table.get(at + 1) {
                    converted = (converted / smaller).round() * smaller;
                }
                converted
            }
            // A setting this build has no unit for (another major version's): its value
            // with a unit is left to Postgres.
            None if !is_pg15_unitless(name) => return Ok(()),
            None => return Err(invalid()),
        }
    };
    let number = if vartype == VarType::Integer {
        let rounded = number.round();
        if rounded > f64::from(i32::MAX) || rounded < f64::from(i32::MIN) {
            return Err(format!(
                "{name}: invalid value {}: it exceeds the integer range",
                shown(value)
            ));
        }
        rounded
    } else {
        number
    };
    if let (Some(min), Some(max)) = (described.min, described.max) {
        if number < min || number > max {
            let in_unit = unit.map_or(String::new(), |u| format!(" {}", u.name()));
            return Err(format!(
                "{name}: {} is outside the valid range: it is {}{in_unit}, and Postgres takes {} to {}{in_unit}",
                shown(value),
                number,
                min,
                max
            ));
        }
    }
    Ok(())
}

/// Whether PostgreSQL 15 has `name` as a numeric setting without a unit. The catalog asks
/// only for numeric settings, so a name in neither list is another version's.
fn is_pg15_unitless(name: &str) -> bool {
    PG15_UNITLESS_NUMBERS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(name))
}

/// Postgres's `parse_bool`: `true`, `false`, `yes`, `no` and any unambiguous prefix of them,
/// `on`, `off` (at least `of`), `1`, `0`, case-insensitive; no blanks.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    let lower = value.to_ascii_lowercase();
    let prefix_of = |word: &str| !lower.is_empty() && word.starts_with(lower.as_str());
    match lower.as_str() {
        "1" | "on" => Some(true),
        "0" | "of" | "off" => Some(false),
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

/// `strtol(value, &end, 0)`, then `strtod` when a `.`, `e` or `E` follows (as `parse_int`
/// does): the number and the text after it.
fn parse_int_prefix(value: &str) -> Option<(f64, &str)> {
    let start = value.len()
        - value
            .trim_start_matches(|c: char| c.is_ascii_whitespace())
            .len();
    let text = &value[start..];
    let (sign, digits) = match text.as_bytes().first() {
        Some(b'-') => (-1.0, &text[1..]),
        Some(b'+') => (1.0, &text[1..]),
        _ => (1.0, text),
    };
    let (radix, body) = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .filter(|h| h.starts_with(|c: char| c.is_ascii_hexdigit()))
    {
        (16, hex)
    } else if digits.starts_with('0') && digits.len() > 1 {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    let len = body
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(body.len());
    let rest = &body[len..];
    if rest.starts_with(['.', 'e', 'E']) || (radix == 10 && len == 0) {
        return parse_real_prefix(value);
    }
    let mut number = 0.0_f64;
    for c in body[..len].chars() {
        number = number * f64::from(radix) + f64::from(c.to_digit(radix)?);
    }
    Some((sign * number, rest))
}

/// `strtod(value, &end)` for decimal numbers (`1.5`, `.5`, `1e3`, `inf`): the number and the
/// text after it; `None` when nothing is a number, or for NaN (Postgres refuses it).
fn parse_real_prefix(value: &str) -> Option<(f64, &str)> {
    let text = value.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let bytes = text.as_bytes();
    let mut end = usize::from(matches!(bytes.first(), Some(b'-' | b'+')));
    let lower = text[end..].to_ascii_lowercase();
    for word in ["infinity", "inf"] {
        if lower.starts_with(word) {
            let sign = if bytes.first() == Some(&b'-') {
                -1.0
            } else {
                1.0
            };
            return Some((sign * f64::INFINITY, &text[end + word.len()..]));
        }
    }
    let digits_from = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let whole = digits_from(end);
    end += whole;
    let mut fraction = 0;
    if bytes.get(end) == Some(&b'.') {
        fraction = digits_from(end + 1);
        if whole + fraction > 0 {
            end += 1 + fraction;
        }
    }
    if whole + fraction == 0 {
        return None;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'-' | b'+')));
        let exponent = digits_from(end + 1 + sign);
        if exponent > 0 {
            end += 1 + sign + exponent;
        }
    }
    let number: f64 = text[..end].parse().ok()?;
    Some((number, &text[end..]))
}

fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    format!("{cut:?}")
}

/// PostgreSQL 15's integer and real settings without a unit: a unit given to one of them is
/// refused (Postgres: "invalid value"), while one given to a setting of another version is
/// left to Postgres.
const PG15_UNITLESS_NUMBERS: &[&str] = &[
    "autovacuum_analyze_scale_factor",
    "autovacuum_analyze_threshold",
    "autovacuum_freeze_max_age",
    "autovacuum_max_workers",
    "autovacuum_multixact_freeze_max_age",
    "autovacuum_vacuum_cost_limit",
    "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_vacuum_insert_threshold",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_threshold",
    "bgwriter_lru_maxpages",
    "bgwriter_lru_multiplier",
    "block_size",
    "checkpoint_completion_target",
    "commit_delay",
    "commit_siblings",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "cpu_tuple_cost",
    "cursor_tuple_fraction",
    "data_directory_mode",
    "debug_discard_caches",
    "default_statistics_target",
    "effective_io_concurrency",
    "extra_float_digits",
    "from_collapse_limit",
    "geqo_effort",
    "geqo_generations",
    "geqo_pool_size",
    "geqo_seed",
    "geqo_selection_bias",
    "geqo_threshold",
    "gin_fuzzy_search_limit",
    "hash_mem_multiplier",
    "jit_above_cost",
    "jit_inline_above_cost",
    "jit_optimize_above_cost",
    "join_collapse_limit",
    "log_file_mode",
    "log_statement_sample_rate",
    "log_transaction_sample_rate",
    "maintenance_io_concurrency",
    "max_connections",
    "max_files_per_process",
    "max_function_args",
    "max_identifier_length",
    "max_index_keys",
    "max_locks_per_transaction",
    "max_logical_replication_workers",
    "max_parallel_maintenance_workers",
    "max_parallel_workers",
    "max_parallel_workers_per_gather",
    "max_pred_locks_per_page",
    "max_pred_locks_per_relation",
    "max_pred_locks_per_transaction",
    "max_prepared_transactions",
    "max_replication_slots",
    "max_sync_workers_per_subscription",
    "max_wal_senders",
    "max_worker_processes",
    "parallel_setup_cost",
    "parallel_tuple_cost",
    "port",
    "random_page_cost",
    "recursive_worktable_factor",
    "seq_page_cost",
    "server_version_num",
    "shared_memory_size_in_huge_pages",
    "superuser_reserved_connections",
    "tcp_keepalives_count",
    "unix_socket_permissions",
    "vacuum_cost_limit",
    "vacuum_cost_page_dirty",
    "vacuum_cost_page_hit",
    "vacuum_cost_page_miss",
    "vacuum_defer_cleanup_age",
    "vacuum_failsafe_age",
    "vacuum_freeze_min_age",
    "vacuum_freeze_table_age",
    "vacuum_multixact_failsafe_age",
    "vacuum_multixact_freeze_min_age",
    "vacuum_multixact_freeze_table_age",
    "wal_block_size",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn integer(min: f64, max: f64) -> Described {
        Described {
            context: "user".into(),
            vartype: Some(VarType::Integer),
            min: Some(min),
            max: Some(max),
        }
    }

    fn of(vartype: VarType) -> Described {
        Described {
            context: "user".into(),
            vartype: Some(vartype),
            min: None,
            max: None,
        }
    }

    #[test]
    fn memory_values_with_units_as_postgres_converts_them() {
        let shared_buffers = integer(16.0, 1_073_741_823.0);
        for ok in [
            "128MB", "16384", "1GB", "1.5GB", " 128 MB", "4TB", "0x4000", "128kB",
        ] {
            assert_eq!(check("shared_buffers", ok, &shared_buffers), Ok(()), "{ok}");
        }
        let err = check("shared_buffers", "banana", &shared_buffers).unwrap_err();
        assert_eq!(
            err,
            "shared_buffers: invalid value \"banana\": an integer is expected, a number of 8kB \
             or one followed by a unit (B, kB, MB, GB or TB), as in '128MB'"
        );
        // Units are case-sensitive to Postgres.
        assert!(check("shared_buffers", "128mb", &shared_buffers).is_err());
        assert!(check("shared_buffers", "128 MB x", &shared_buffers).is_err());
        let err = check("shared_buffers", "64kB", &shared_buffers).unwrap_err();
        assert!(
            err.contains("outside the valid range: it is 8 8kB, and Postgres takes 16 to"),
            "{err}"
        );
        assert!(check("shared_buffers", "9TB", &shared_buffers).is_err());
    }

    #[test]
    fn time_values_with_units() {
        let statement_timeout = integer(0.0, 2_147_483_647.0);
        for ok in ["10s", "0", "1min", "2h", "1d", "500ms", "1500us"] {
            assert_eq!(
                check("statement_timeout", ok, &statement_timeout),
                Ok(()),
                "{ok}"
            );
        }
        let err = check("statement_timeout", "10 sec", &statement_timeout).unwrap_err();
        assert!(err.contains("us, ms, s, min, h or d"), "{err}");
        assert!(check("statement_timeout", "-1s", &statement_timeout).is_err());
        assert!(check("statement_timeout", "30d", &statement_timeout).is_err());
    }

    #[test]
    fn unitless_numbers_refuse_a_unit_and_other_versions_are_left_to_postgres() {
        let max_connections = integer(1.0, 262_143.0);
        assert_eq!(check("max_connections", "100", &max_connections), Ok(()));
        assert_eq!(check("max_connections", "1e2", &max_connections), Ok(()));
        let err = check("max_connections", "10MB", &max_connections).unwrap_err();
        assert!(err.contains("takes no unit"), "{err}");
        assert!(check("max_connections", "0", &max_connections).is_err());
        assert_eq!(
            check("some_future_setting", "10MB", &max_connections),
            Ok(())
        );
        let real = Described {
            vartype: Some(VarType::Real),
            min: Some(0.0),
            max: Some(1.0),
            ..of(VarType::Real)
        };
        assert_eq!(check("checkpoint_completion_target", "0.9", &real), Ok(()));
        assert_eq!(check("checkpoint_completion_target", ".5", &real), Ok(()));
        assert!(check("checkpoint_completion_target", "1.5", &real).is_err());
        assert!(check("checkpoint_completion_target", "nan", &real).is_err());
    }

    #[test]
    fn booleans_as_parse_bool_reads_them() {
        for (text, value) in [
            ("on", true),
            ("OFF", false),
            ("of", false),
            ("t", true),
            ("tr", true),
            ("Yes", true),
            ("n", false),
            ("1", true),
            ("0", false),
        ] {
            assert_eq!(parse_bool(text), Some(value), "{text}");
        }
        for bad in ["o", "", "2", "onn", " on", "banana", "truex"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
        let err = check("fsync", "banana", &of(VarType::Bool)).unwrap_err();
        assert!(
            err.contains("on, off, true, false, yes, no, 1 or 0"),
            "{err}"
        );
    }

    #[test]
    fn enums_with_their_hidden_values() {
        let enumerated = of(VarType::Enum);
        for ok in ["replica", "LOGICAL", "hot_standby", "archive"] {
            assert_eq!(check("wal_level", ok, &enumerated), Ok(()), "{ok}");
        }
        for ok in ["on", "true", "1", "remote_apply"] {
            assert_eq!(check("synchronous_commit", ok, &enumerated), Ok(()), "{ok}");
        }
        assert_eq!(check("log_min_messages", "debug", &enumerated), Ok(()));
        assert!(check("password_encryption", "on", &enumerated).is_err());
        let err = check("wal_level", "full", &enumerated).unwrap_err();
        assert_eq!(
            err,
            "wal_level: invalid value \"full\": one of \"minimal\", \"replica\", \"logical\" is expected"
        );
        assert_eq!(check("some_future_enum", "x", &enumerated), Ok(()));
        assert_eq!(
            check("search_path", "anything", &of(VarType::String)),
            Ok(())
        );
    }
}

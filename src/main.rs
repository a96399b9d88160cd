//! The `compute_ctl` binary: parses the command line and dispatches; every exit code is one of
//! CONTRACT.md's.

use std::io::Write;
use std::path::Path;

use clap::Parser;
use compute_ctl::cli::{Cli, Command, FsmFormat, JournalCommand, SpecCommand};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        None => compute_ctl::run::run(cli.run),
        Some(Command::Journal { command }) => journal(command),
        Some(Command::Fsm { format }) => {
            let text = match format {
                FsmFormat::Mermaid => states::table::mermaid(),
                FsmFormat::Json => {
                    serde_json::to_string_pretty(&states::table::table()).unwrap_or_default() + "\n"
                }
            };
            print(&text)
        }
        Some(Command::Spec {
            command:
                SpecCommand::Check {
                    file,
                    pgbin,
                    connstr,
                },
        }) => spec_check(&file, pgbin.as_deref(), &connstr),
        Some(Command::Completions { shell }) => {
            let mut text = Vec::new();
            compute_ctl::cli::completions(shell, &mut text);
            print(&String::from_utf8_lossy(&text))
        }
        Some(Command::Man) => {
            let mut text = Vec::new();
            match compute_ctl::cli::man_page(&mut text) {
                Ok(()) => print(&String::from_utf8_lossy(&text)),
                Err(e) => {
                    eprintln!("error: cannot render the man page: {e}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

/// `spec check`: `-C` names the admin role, which may own databases.
fn spec_check(file: &Path, pgbin: Option<&Path>, connstr: &str) -> i32 {
    let admin = match compute_ctl::postgres::connect::AdminConnection::parse(connstr) {
        Ok(admin) => admin,
        Err(e) => {
            eprintln!("error: {e:#}");
            return compute_ctl::exit::ExitCode::BadCommandLine.code();
        }
    };
    compute_ctl::spec::check_file(
        file,
        pgbin,
        admin.role(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
}

fn print(text: &str) -> i32 {
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn journal(command: JournalCommand) -> i32 {
    match command {
        JournalCommand::Dump {
            state_dir,
            since,
            json,
        } => match compute_ctl::journal::dump(&state_dir, since, json, &mut std::io::stdout()) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                compute_ctl::exit::ExitCode::of_journal_error(&e).code()
            }
        },
        JournalCommand::Verify { state_dir } => match compute_ctl::journal::verify(&state_dir) {
            Ok(report) => {
                println!(
                    "ok: {} records in {} segments, last seq {}, last epoch {}, {} bytes",
                    report.records,
                    report.segments,
                    report.last_seq,
                    report.last_epoch,
                    report.bytes
                );
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                compute_ctl::exit::ExitCode::of_journal_error(&e).code()
            }
        },
    }
}

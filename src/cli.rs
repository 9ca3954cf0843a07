//! The command line (SPEC §1). Exit codes: 0 success, 1 invalid config or failed
//! command, 2 usage error.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Default config file when neither `-c` nor `$FULCRUM_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "/etc/fulcrum/fulcrum.yaml";

#[derive(Debug, Parser)]
#[command(
    name = "fulcrum",
    version,
    about = "A high-performance L4/L7 load balancer appliance",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file: print a one-line summary (exit 0) or every error (exit 1).
    Check {
        /// The config file [default: $FULCRUM_CONFIG, else /etc/fulcrum/fulcrum.yaml]
        #[arg(short = 'c', long = "config", env = "FULCRUM_CONFIG", default_value = DEFAULT_CONFIG, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Parses the arguments and runs the command; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors exit 2.
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            };
        }
    };
    crate::install_crypto_provider();
    match cli.command {
        Command::Check { config } => check(&config),
    }
}

/// `fulcrum check`: everything `run` validates, binding nothing.
pub fn check(path: &std::path::Path) -> i32 {
    match crate::config::load(path) {
        Ok(snapshot) => {
            println!("{}: ok: {}", path.display(), snapshot.summary());
            0
        }
        Err(errors) => {
            let stderr = std::io::stderr();
            let mut out = stderr.lock();
            for e in &errors {
                let _ = writeln!(out, "{e}");
            }
            1
        }
    }
}

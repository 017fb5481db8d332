//! The `trellis` command line, as a library function, so every binary that runs a node (the
//! `trellis` binary, the cluster tests' `trellis-node`) is the same program.
//!
//! * `trellis dev`: a single-node cluster with data in `./trellis-data`, the AWS JSON API on
//!   127.0.0.1:8083 and gRPC on 127.0.0.1:7300.
//! * `trellis server --config FILE`: a node configured by file, environment and flags.
//! * `trellis run`: one execution in-process on the same step function, and
//!   `trellis validate`: AWS's `ValidateStateMachineDefinition` response.

use crate::{run, serve};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "Trellis: a self-hosted engine for AWS Step Functions state machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a single-node cluster for development: data in ./trellis-data, the AWS JSON API
    /// on 127.0.0.1:8083, gRPC on 127.0.0.1:7300.
    Dev(serve::Flags),
    /// Start a node from a configuration file (see docs/operations.md).
    Server(serve::Flags),
    /// Run one execution in-process and print its result as one JSON line.
    Run(run::Args),
    /// Copy a stopped node's data directory into a new one, compactly: sled does not give
    /// back the space of deleted executions, a copy holds only what is live. Start the node
    /// on the new directory afterwards (see docs/operations.md, Retention).
    Compact {
        /// The node's data directory (the node must be stopped).
        #[arg(long)]
        data_dir: PathBuf,
        /// The new directory (absent or empty).
        #[arg(long)]
        into: PathBuf,
    },
    /// Build a new cluster's first node from a backup (`trellisctl backup --to DIR`): writes
    /// the data directory for the node the other flags describe, then exits. Start the node
    /// with the same flags (`trellis server ...`); other nodes join it as usual.
    Restore {
        /// The backup: a directory, or s3://bucket/prefix (downloaded first; S3 is reached
        /// as for a DISTRIBUTED Map: `[aws]`, then the AWS SDKs' variables).
        #[arg(long)]
        from: String,
        #[command(flatten)]
        flags: serve::Flags,
    },
    /// Validate a definition and print the ValidateStateMachineDefinition response.
    Validate {
        /// The definition file (Amazon States Language JSON).
        definition: PathBuf,
        /// Validate for an EXPRESS state machine.
        #[arg(long)]
        express: bool,
    },
}

/// Parses the command line and runs the command; errors print one line and exit 2.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(flags) | Command::Server(flags) => flags
            .config()
            .and_then(serve::run)
            .map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::main(args),
        Command::Compact { data_dir, into } => compact(&data_dir, &into),
        Command::Restore { from, flags } => flags.config().and_then(|cfg| restore(&from, &cfg)),
        Command::Validate {
            definition,
            express,
        } => validate(&definition, express),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trellis: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn compact(from: &std::path::Path, into: &std::path::Path) -> anyhow::Result<ExitCode> {
    let t = std::time::Instant::now();
    let (before, after) = trellis_storage::compact_into(from, into)?;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "compacted {} ({:.1} MiB) into {} ({:.1} MiB) in {:.1} s",
        from.display(),
        mib(before),
        into.display(),
        mib(after),
        t.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn restore(from: &str, cfg: &crate::config::Config) -> anyhow::Result<ExitCode> {
    let t = std::time::Instant::now();
    let r = crate::restore::restore(from, cfg)?;
    println!(
        "restored {} shards and the meta group ({:.1} KiB) from {} into {} for node {} in {:.1} s; start it with the same flags",
        r.shards,
        r.bytes as f64 / 1024.0,
        from,
        cfg.node.data_dir.display(),
        cfg.node.id,
        t.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn validate(path: &std::path::Path, express: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let diags = trellis_asl::validate::validate(&text, trellis_asl::Options { express });
    let failed = diags
        .iter()
        .any(|d| d.severity == trellis_asl::Severity::Error);
    let response = serde_json::json!({
        "result": if failed { "FAIL" } else { "OK" },
        "diagnostics": diags,
        "truncated": false,
    });
    println!("{response}");
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

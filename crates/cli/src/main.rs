//! `trellisctl`: manage state machines, executions and activities, inspect the cluster, and
//! generate load — over gRPC only.
//!
//! `args` is the command line, `output` how results print, `commands` one module per command
//! group, `bench` the load generator.

mod args;
mod bench;
mod commands;
mod kube;
#[macro_use]
mod output;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use serde_json::json;
use trellis_client::{v1 as pb, Client};

use crate::args::{Cli, Cmd, PlacementCmd};
use crate::commands::{activities, certs, cluster, executions, machines, mapruns};
use crate::output::{api, table};

/// `trellisctl backup --to`: into a directory, or into S3 as the parts arrive.
async fn backup(c: &mut Client, to: &str, j: bool) -> Result<()> {
    use trellis_client::backup::{Destination, S3Location};
    let Some(s3) = S3Location::parse(to) else {
        return backup_into(c, Destination::Dir(std::path::Path::new(to)), j).await;
    };
    let s3 = s3.map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = trellis_client::s3::S3Config::from_env(&|k| std::env::var(k).ok());
    backup_into(c, Destination::S3 { to: &s3, cfg: &cfg }, j).await
}

/// `trellisctl backup`: the parts written as they come, with a bar per group on a terminal.
async fn backup_into(
    c: &mut Client,
    to: trellis_client::backup::Destination<'_>,
    j: bool,
) -> Result<()> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut bar: Option<(u64, indicatif::ProgressBar)> = None;
    let started = std::time::Instant::now();
    let place = to.to_string();
    let written = trellis_client::backup::write(&mut c.admin, to, |group, bytes, size| {
        if !tty {
            return;
        }
        if bar.as_ref().is_none_or(|(g, _)| *g != group) {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            let what = if group == 0 {
                "meta".to_string()
            } else {
                format!("shard {}", group - 1)
            };
            let b = indicatif::ProgressBar::new(size);
            if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
                "{{elapsed_precise}} [{{bar:40}}] {{bytes}}/{{total_bytes}} {what}"
            )) {
                b.set_style(style.progress_chars("=> "));
            }
            bar = Some((group, b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(bytes);
        }
    })
    .await;
    if let Some((_, b)) = bar {
        b.finish_and_clear();
    }
    let m = written.map_err(|e| match e {
        trellis_client::backup::BackupError::Status(s) => api(s),
        e => anyhow::anyhow!("{e}"),
    })?;
    let bytes: u64 = m.groups.iter().map(|g| g.bytes).sum();
    if j {
        out!("{}", serde_json::to_string(&m)?);
    } else {
        let into = if place.starts_with("s3://") {
            "to"
        } else {
            "into"
        };
        out!(
            "backed up the meta group and {} shards ({:.1} KiB) {into} {place} in {:.1} s",
            m.shards,
            bytes as f64 / 1024.0,
            started.elapsed().as_secs_f64()
        );
        out!("restore with: trellis restore --from {place} --data-dir <new dir> ...");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let endpoint = cli.endpoint.clone();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = format!("{e:#}");
            match hint(&e, &endpoint) {
                Some(h) => eprintln!("trellisctl: {e}; {h}"),
                None => eprintln!("trellisctl: {e}"),
            }
            ExitCode::from(1)
        }
    }
}

/// What to try when the error says the endpoint is not a node's gRPC port.
fn hint(error: &str, endpoint: &str) -> Option<String> {
    if error.contains("grpc-status header missing") {
        // An HTTP server answered: most likely a node's AWS API port.
        return Some(format!(
            "{endpoint} answers HTTP but not gRPC: is it a node's AWS API port (node.http_addr, \
             8083)? trellisctl talks to the gRPC port (node.grpc_addr, 7300 by default)"
        ));
    }
    if error.starts_with("cannot connect to") {
        return Some(format!(
            "is a node running there? Start one with `trellis dev`, or point --endpoint \
             (TRELLIS_ENDPOINT) at a node's gRPC port; now: {endpoint}"
        ));
    }
    None
}

async fn run(cli: Cli) -> Result<()> {
    if let Cmd::Certs(cmd) = &cli.command {
        return certs::certs(cmd, cli.json);
    }
    let options = trellis_client::Options {
        token: cli.token.clone(),
        ca: cli.ca.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
    };
    let mut c = Client::connect_with(&cli.endpoint, &options).await?;
    let j = cli.json;
    match cli.command {
        Cmd::Sm(cmd) => machines::sm(&mut c, j, cmd).await,
        Cmd::Exec(cmd) => executions::exec(&mut c, j, cmd).await,
        Cmd::Activity(cmd) => activities::activity(&mut c, j, cmd).await,
        Cmd::Maprun(cmd) => mapruns::maprun(&mut c, j, cmd).await,
        Cmd::Cluster(cmd) => cluster::cluster(&mut c, j, cmd).await,
        Cmd::Nodes(cmd) => cluster::nodes(&mut c, j, cmd).await,
        Cmd::Shards(cmd) => cluster::shards(&mut c, j, cmd).await,
        Cmd::Placement(cmd) => {
            let paused = matches!(cmd, PlacementCmd::Pause);
            c.admin
                .set_placement(pb::SetPlacementRequest { paused })
                .await
                .map_err(api)?;
            if j {
                out!("{}", json!({"placementPaused": paused}));
            } else {
                out!("placement {}", if paused { "paused" } else { "resumed" });
            }
            Ok(())
        }
        Cmd::Doctor => {
            let r = c
                .admin
                .doctor(pb::Empty {})
                .await
                .map_err(api)?
                .into_inner();
            if j {
                out!(
                    "{}",
                    json!({"scannedExecutions": r.scanned_executions, "findings": r.findings.iter().map(|f| json!({
                    "shard": f.shard, "kind": f.kind, "executionArn": f.execution_arn, "detail": f.detail, "repaired": f.repaired})).collect::<Vec<_>>()})
                );
            } else {
                out!(
                    "scanned {} executions, {} findings",
                    r.scanned_executions,
                    r.findings.len()
                );
                table(
                    &["SHARD", "KIND", "EXECUTION", "REPAIRED", "DETAIL"],
                    r.findings
                        .iter()
                        .map(|f| {
                            vec![
                                f.shard.to_string(),
                                f.kind.clone(),
                                f.execution_arn.clone(),
                                f.repaired.to_string(),
                                f.detail.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(())
        }
        Cmd::Bench(b) => bench::bench(&c, b, j).await,
        Cmd::Backup { to } => backup(&mut c, &to, j).await,
        Cmd::Certs(_) => unreachable!("handled before connecting"),
    }
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn the_wrong_port_and_no_node_get_a_hint() {
        let http = "UnknownOperationException: grpc-status header missing, mapped from HTTP status code 404";
        let h = hint(http, "http://127.0.0.1:8083").unwrap();
        assert!(h.contains("AWS API port") && h.contains("7300"), "{h}");
        let refused = "cannot connect to http://127.0.0.1:7399: Connection refused (os error 111)";
        let h = hint(refused, "http://127.0.0.1:7399").unwrap();
        assert!(
            h.contains("trellis dev") && h.contains("TRELLIS_ENDPOINT"),
            "{h}"
        );
        assert!(hint("ExecutionDoesNotExist: nope", "http://x").is_none());
    }
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    /// Every command and every flag says what it is for.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" || a.is_global_set() && path.contains(' ') {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for s in cmd.get_subcommands() {
                let p = format!("{path} {}", s.get_name());
                if s.get_name() != "help" && s.get_about().is_none() && s.get_long_about().is_none()
                {
                    missing.push(p.clone());
                }
                walk(s, &p, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&crate::args::Cli::command(), "trellisctl", &mut missing);
        assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
    }
}

//! `trellisctl certs`: a cluster CA and the node and client certificates it issues, written
//! as PEM files (keys readable by their owner only). Nothing is sent anywhere.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;
use trellis_tls::certs::{Authority, Usage};

use crate::args::CertsCmd;
use crate::output::out;

/// Writes `contents` to a new file (never over an existing one); keys get mode 0600.
fn create(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = o.open(path).with_context(|| {
        if path.exists() {
            format!("{} exists; not overwritten", path.display())
        } else {
            format!("cannot create {}", path.display())
        }
    })?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn authority(dir: &Path) -> Result<Authority> {
    let key = dir.join("ca-key.pem");
    let pem = std::fs::read_to_string(&key).with_context(|| {
        format!(
            "cannot read {} (make a CA first: trellisctl certs ca --dir {})",
            key.display(),
            dir.display()
        )
    })?;
    Authority::from_key_pem(&pem).with_context(|| format!("{} is not a CA key", key.display()))
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok || name.starts_with('.') || name == "ca" || name == "ca-key" {
        bail!("{name:?} is not a usable name (letters, digits, '-', '_', '.'; not 'ca')");
    }
    Ok(())
}

/// A DNS name (labels of letters, digits and '-', a leading `*.` allowed) or an IP address.
fn check_san(san: &str) -> Result<()> {
    if san.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let host = san.strip_prefix("*.").unwrap_or(san);
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        bail!("--san {san:?} is neither a DNS name nor an IP address");
    }
    Ok(())
}

/// A certificate for `name` from the CA in `dir`.
fn issue(dir: &Path, name: &str, sans: &[String], usage: Usage) -> Result<Vec<PathBuf>> {
    check_name(name)?;
    for san in sans {
        check_san(san)?;
    }
    let issued = authority(dir)?
        .issue(name, sans, usage)
        .with_context(|| format!("cannot issue a certificate for {name}"))?;
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    create(&key, &issued.key_pem, true)?;
    create(&cert, &issued.cert_pem, false)?;
    Ok(vec![cert, key])
}

pub(crate) fn certs(cmd: &CertsCmd, json_out: bool) -> Result<()> {
    let written = match cmd {
        CertsCmd::Ca { dir } => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
            if cert.exists() || key.exists() {
                bail!("{} already holds a CA; not overwritten", dir.display());
            }
            let ca = Authority::generate()?;
            create(&key, &ca.key_pem(), true)?;
            create(&cert, &ca.cert_pem(), false)?;
            vec![cert, key]
        }
        CertsCmd::Node { name, sans, dir } => issue(dir, name, sans, Usage::Node)?,
        CertsCmd::Client { name, dir } => issue(dir, name, &[], Usage::Client)?,
    };
    if json_out {
        let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        out!("{}", json!({ "written": files }));
    } else {
        for p in &written {
            out!("wrote {}", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sans_are_checked() {
        for ok in ["trellis-0", "ops", "node_1.a"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", ".hidden", "ca", "a b", "x/y"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for ok in [
            "127.0.0.1",
            "::1",
            "trellis-0.trellis.default.svc",
            "*.trellis",
            "localhost",
        ] {
            assert!(check_san(ok).is_ok(), "{ok}");
        }
        for bad in ["bad name!", "", "a..b", "-a", "a_b.c", "*."] {
            assert!(check_san(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_then_certificates_never_overwriting() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        certs(&CertsCmd::Ca { dir: d.clone() }, false).unwrap();
        assert!(certs(&CertsCmd::Ca { dir: d.clone() }, false).is_err());
        let node = CertsCmd::Node {
            name: "n1".into(),
            sans: vec!["127.0.0.1".into()],
            dir: d.clone(),
        };
        certs(&node, false).unwrap();
        assert!(certs(&node, false).is_err(), "overwrote n1");
        // What was issued chains to the CA.
        let ca = trellis_tls::read_roots(&d.join("ca.pem")).unwrap();
        assert_eq!(ca.len(), 1);
        let id =
            trellis_tls::Identity::from_files(&d.join("n1.pem"), &d.join("n1-key.pem")).unwrap();
        assert_eq!(
            trellis_tls::common_name(&id.current().cert[0]).as_deref(),
            Some("n1")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.join("n1-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "a key readable by others: {mode:o}");
        }
    }
}

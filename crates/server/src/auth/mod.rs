//! Who is calling, and what they may do.
//!
//! A node knows its principals ([`Principals`]): the root principal (from
//! `TRELLIS_ROOT_ACCESS_KEY_ID` and `TRELLIS_ROOT_SECRET_ACCESS_KEY`, or `[auth]`, as MinIO's
//! root user; it has the `admin` role), `[[auth.principals]]`, and the principals of
//! `auth.principals_file`, read again when the file changes. The AWS JSON API checks each
//! request's SigV4 signature against their access keys ([`sigv4`]); the gRPC API takes their
//! bearer tokens. Each call is then checked against the principal's policy ([`policy`]) and
//! its rate limits ([`limit`]). With no principal configured and no file named,
//! authentication is off (`trellis dev` out of the box) and every call is allowed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use trellis_proto::{ApiError, Code};

use crate::config::{AuthSection, PrincipalConfig};
use policy::{Decision, Policy, Role};

pub mod grpc;
pub mod limit;
pub mod policy;
pub mod sigv4;

/// A caller the node knows.
pub struct Principal {
    pub name: String,
    pub access_key_id: String,
    secret: String,
    pub policy: Policy,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The principals a node knows, and how far a request's date may be from the node's clock.
#[derive(Debug)]
pub struct Principals {
    by_key: HashMap<String, Arc<Principal>>,
    /// SHA-256 of a bearer token -> its principal (looked up by digest, so the lookup's
    /// timing says nothing about the token).
    by_token: HashMap<[u8; 32], Arc<Principal>>,
    /// Name -> principal: a verified client certificate's common name.
    by_name: HashMap<String, Arc<Principal>>,
    pub max_skew: Duration,
}

impl Principals {
    /// The principals `[auth]` names (not its file's); `None` when authentication is off,
    /// or when they are not valid. For tests and benches: a node uses [`Auth::new`], which
    /// reads the file and says what is wrong.
    pub fn from_config(a: &AuthSection) -> Option<Principals> {
        Principals::build(a, &[]).ok().flatten()
    }

    fn build(a: &AuthSection, from_file: &[PrincipalConfig]) -> anyhow::Result<Option<Principals>> {
        let mut all: Vec<PrincipalConfig> = Vec::new();
        if !a.root_access_key_id.is_empty() {
            all.push(PrincipalConfig {
                name: "root".into(),
                access_key_id: a.root_access_key_id.clone(),
                secret_access_key: a.root_secret_access_key.clone(),
                tokens: (!a.root_token.is_empty())
                    .then(|| a.root_token.clone())
                    .into_iter()
                    .collect(),
                roles: vec![Role::Admin],
                ..Default::default()
            });
        }
        all.extend(a.principals.iter().cloned());
        all.extend(from_file.iter().cloned());
        if all.is_empty() && a.principals_file.is_empty() {
            return Ok(None);
        }
        check_principals(&all)?;
        let mut p = Principals {
            by_key: HashMap::new(),
            by_token: HashMap::new(),
            by_name: HashMap::new(),
            max_skew: Duration::from_secs(a.max_skew_seconds),
        };
        for c in all {
            let principal = Arc::new(Principal {
                name: c.name.clone(),
                access_key_id: c.access_key_id.clone(),
                secret: c.secret_access_key.clone(),
                policy: Policy::new(&c.roles, &c.statements),
            });
            if !c.access_key_id.is_empty() {
                p.by_key.insert(c.access_key_id.clone(), principal.clone());
            }
            for t in &c.tokens {
                p.by_token.insert(digest(t), principal.clone());
            }
            p.by_name.insert(c.name.clone(), principal.clone());
        }
        Ok(Some(p))
    }

    pub fn get(&self, access_key_id: &str) -> Option<&Principal> {
        self.by_key.get(access_key_id).map(|p| &**p)
    }

    /// The principal named `name` (the common name of a verified client certificate).
    pub fn by_name(&self, name: &str) -> Option<Arc<Principal>> {
        self.by_name.get(name).cloned()
    }

    /// The principal whose bearer token this is.
    pub fn by_token(&self, token: &str) -> Option<Arc<Principal>> {
        self.by_token.get(&digest(token)).cloned()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Refuses a list of principals that cannot all be told apart: names empty or repeated, a
/// key without its secret, an access key or token used twice, a token too short to be a
/// secret.
pub fn check_principals(list: &[PrincipalConfig]) -> anyhow::Result<()> {
    let (mut names, mut keys, mut tokens) = (HashSet::new(), HashSet::new(), HashSet::new());
    for p in list {
        if p.name.is_empty() {
            bail!("a principal needs a name");
        }
        if !names.insert(p.name.as_str()) {
            bail!("principal {:?} is named twice", p.name);
        }
        if p.access_key_id.is_empty() != p.secret_access_key.is_empty() {
            bail!(
                "principal {:?} needs both an access key and a secret, or neither",
                p.name
            );
        }
        if !p.access_key_id.is_empty() && !keys.insert(p.access_key_id.as_str()) {
            bail!("access key {:?} belongs to two principals", p.access_key_id);
        }
        for t in &p.tokens {
            if t.len() < 16 {
                bail!(
                    "a token of principal {:?} is shorter than 16 characters",
                    p.name
                );
            }
            if !tokens.insert(t.as_str()) {
                bail!("a token of principal {:?} is given twice", p.name);
            }
        }
    }
    Ok(())
}

/// A file as it was: its modified time and size.
type Stamp = (SystemTime, u64);

/// The principals file: `[[principals]]`, each as `[[auth.principals]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    #[serde(default)]
    principals: Vec<PrincipalConfig>,
}

/// A node's authentication, authorization and rate limits, with the one entry each call
/// goes through ([`Auth::allow`]).
pub struct Auth {
    cfg: AuthSection,
    account: String,
    current: RwLock<Option<Arc<Principals>>>,
    /// The principals file and when it was last read as it then was.
    file: Option<(PathBuf, Mutex<Option<Stamp>>)>,
    buckets: limit::Buckets,
}

impl Auth {
    /// The node's principals from its configuration and principals file; a file that cannot
    /// be read or parsed at start is an error.
    pub fn new(cfg: &AuthSection, account: &str) -> anyhow::Result<Auth> {
        let file = (!cfg.principals_file.is_empty())
            .then(|| (PathBuf::from(&cfg.principals_file), Mutex::new(None)));
        let auth = Auth {
            cfg: cfg.clone(),
            account: account.to_string(),
            current: RwLock::new(None),
            file,
            buckets: limit::Buckets::new(cfg.rate.clone()),
        };
        let stamp = auth.file_stamp();
        let principals = Principals::build(cfg, &auth.read_file()?)?;
        *auth.current.write().unwrap_or_else(|e| e.into_inner()) = principals.map(Arc::new);
        if let Some((_, seen)) = &auth.file {
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        }
        Ok(auth)
    }

    /// Whether calls must be authenticated.
    pub fn on(&self) -> bool {
        self.principals().is_some()
    }

    /// The principals as they are now (`None`: authentication is off).
    pub fn principals(&self) -> Option<Arc<Principals>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn file_stamp(&self) -> Option<Stamp> {
        let (path, _) = self.file.as_ref()?;
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    fn read_file(&self) -> anyhow::Result<Vec<PrincipalConfig>> {
        let Some((path, _)) = &self.file else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read principals file {}", path.display()))?;
        let f: PrincipalsFile = toml::from_str(&text)
            .with_context(|| format!("principals file {} is not valid", path.display()))?;
        Ok(f.principals)
    }

    /// Reads the principals file again if it changed since it was last read. A file that
    /// became unreadable or invalid keeps the principals as they were (logged as a WARN).
    pub fn reload_if_changed(&self) {
        let Some((path, seen)) = &self.file else {
            return;
        };
        let stamp = self.file_stamp();
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if stamp == *seen {
            return;
        }
        *seen = stamp;
        match self
            .read_file()
            .and_then(|list| Principals::build(&self.cfg, &list))
        {
            Ok(p) => {
                let count = p.as_ref().map_or(0, |p| p.by_name.len());
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = p.map(Arc::new);
                self.buckets.clear();
                tracing::info!(file = %path.display(), principals = count, "principals reloaded");
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "principals file not reloaded; the previous principals stay");
            }
        }
    }

    /// Re-reads the principals file when it changes, every `every`, until the node goes.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        if self.file.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(auth) = weak.upgrade() else { break };
                auth.reload_if_changed();
            }
        });
    }

    /// Whether `principal` may call `action` (`states:StartExecution`,
    /// `trellis:DrainNode`) on `resource` (`*` when the call names none) now: its rate limit
    /// first, then its policy. A refusal is AWS's error, and is logged.
    pub fn allow(
        &self,
        principal: &Principal,
        action: &str,
        resource: &str,
    ) -> Result<(), ApiError> {
        self.allow_at(principal, action, resource, Instant::now())
    }

    fn allow_at(
        &self,
        principal: &Principal,
        action: &str,
        resource: &str,
        now: Instant,
    ) -> Result<(), ApiError> {
        if !self
            .buckets
            .take(&principal.name, limit::Class::of(action), now)
        {
            tracing::info!(principal = %principal.name, action, "call throttled");
            return Err(ApiError::new(Code::ThrottlingException, "Rate exceeded"));
        }
        let decision = principal.policy.decide(action, resource);
        if decision == Decision::Allow {
            return Ok(());
        }
        tracing::info!(principal = %principal.name, action, resource, "call denied");
        let why = match decision {
            Decision::ExplicitDeny => "with an explicit deny in an identity-based policy".into(),
            _ => format!("because no identity-based policy allows the {action} action"),
        };
        Err(ApiError::new(
            Code::AccessDeniedException,
            format!(
                "User: arn:aws:iam::{}:user/{} is not authorized to perform: {action} on resource: {resource} {why}",
                self.account, principal.name
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(file: &std::path::Path) -> AuthSection {
        AuthSection {
            principals_file: file.display().to_string(),
            rate: crate::config::RateSection {
                other_burst: 3,
                other_per_second: 1,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    const FILE: &str = r#"
        [[principals]]
        name = "ci"
        access_key_id = "AKCI"
        secret_access_key = "ci-secret"
        tokens = ["ci-token-0123456789"]
        roles = ["read-only"]
    "#;

    #[test]
    fn a_principals_file_is_read_and_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("principals.toml");
        std::fs::write(&f, FILE).unwrap();
        let auth = Auth::new(&section(&f), "000000000000").unwrap();
        let p = auth.principals().unwrap();
        let ci = p.by_token("ci-token-0123456789").unwrap();
        let ci = &*ci;
        assert_eq!(ci.name, "ci");
        assert!(p.get("AKCI").is_some() && p.by_token("ci-token-012345678").is_none());
        assert!(auth.allow(ci, "states:ListExecutions", "*").is_ok());
        let denied = auth
            .allow(ci, "states:StartExecution", "arn:x")
            .unwrap_err();
        assert_eq!(denied.code, Code::AccessDeniedException);
        assert_eq!(
            denied.message,
            "User: arn:aws:iam::000000000000:user/ci is not authorized to perform: \
             states:StartExecution on resource: arn:x because no identity-based policy allows \
             the states:StartExecution action"
        );
        // Revoked: the token goes from the file (a size change, so the stamp changes even
        // within the file system's time granularity).
        std::fs::write(&f, FILE.replace("tokens = [\"ci-token-0123456789\"]", "")).unwrap();
        auth.reload_if_changed();
        assert!(auth
            .principals()
            .unwrap()
            .by_token("ci-token-0123456789")
            .is_none());
        // A broken file keeps what was there.
        std::fs::write(&f, "[[principals]]\nnme = 1\n").unwrap();
        auth.reload_if_changed();
        assert!(auth.principals().unwrap().get("AKCI").is_some());
        // An empty file: authentication stays on, with nobody.
        std::fs::write(&f, "").unwrap();
        auth.reload_if_changed();
        assert!(auth.on() && auth.principals().unwrap().get("AKCI").is_none());
    }

    #[test]
    fn a_flood_is_throttled_per_principal() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("principals.toml");
        let two = format!(
            "{FILE}\n[[principals]]\nname = \"other\"\ntokens = [\"other-token-0123456\"]\nroles = [\"admin\"]\n"
        );
        std::fs::write(&f, two).unwrap();
        let auth = Auth::new(&section(&f), "000000000000").unwrap();
        let p = auth.principals().unwrap();
        let ci = &*p.by_token("ci-token-0123456789").unwrap();
        let other = &*p.by_token("other-token-0123456").unwrap();
        let now = Instant::now();
        let calls = (0..10)
            .map(|_| auth.allow_at(ci, "states:ListExecutions", "*", now))
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(calls, 3);
        let e = auth
            .allow_at(ci, "states:ListExecutions", "*", now)
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::ThrottlingException, "Rate exceeded")
        );
        assert!(auth
            .allow_at(other, "states:ListExecutions", "*", now)
            .is_ok());
        // A second later, one more.
        let later = now + Duration::from_secs(1);
        assert!(auth
            .allow_at(ci, "states:ListExecutions", "*", later)
            .is_ok());
        assert!(auth
            .allow_at(ci, "states:ListExecutions", "*", later)
            .is_err());
    }

    #[test]
    fn principals_that_cannot_be_told_apart_are_refused() {
        let p = |name: &str, key: &str, secret: &str, token: &str| PrincipalConfig {
            name: name.into(),
            access_key_id: key.into(),
            secret_access_key: secret.into(),
            tokens: if token.is_empty() {
                vec![]
            } else {
                vec![token.into()]
            },
            ..Default::default()
        };
        let t = "a-token-long-enough";
        assert!(check_principals(&[p("a", "K", "s", t), p("b", "L", "s", "")]).is_ok());
        for bad in [
            vec![p("", "K", "s", "")],
            vec![p("a", "K", "s", ""), p("a", "L", "s", "")],
            vec![p("a", "K", "", "")],
            vec![p("a", "K", "s", ""), p("b", "K", "s", "")],
            vec![p("a", "", "", "short")],
            vec![p("a", "", "", t), p("b", "", "", t)],
        ] {
            assert!(check_principals(&bad).is_err(), "{bad:?}");
        }
    }
}

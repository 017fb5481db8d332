//! Who is calling. A node knows its principals by access key; the AWS JSON API checks each
//! request's SigV4 signature against them ([`sigv4`]). With no principal configured,
//! authentication is off (`trellis dev` out of the box).
//!
//! The root principal comes from `TRELLIS_ROOT_ACCESS_KEY_ID` and
//! `TRELLIS_ROOT_SECRET_ACCESS_KEY` (or `[auth]` in the config), as MinIO's root user does.

use std::collections::HashMap;
use std::time::Duration;

pub mod sigv4;

/// A caller the node knows.
#[derive(Clone)]
pub struct Principal {
    pub name: String,
    pub access_key_id: String,
    secret: String,
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
    by_key: HashMap<String, Principal>,
    pub max_skew: Duration,
}

impl Principals {
    /// The principals `[auth]` names; `None` when it names none (authentication off).
    pub fn from_config(a: &crate::config::AuthSection) -> Option<Principals> {
        if a.root_access_key_id.is_empty() {
            return None;
        }
        let root = Principal {
            name: "root".into(),
            access_key_id: a.root_access_key_id.clone(),
            secret: a.root_secret_access_key.clone(),
        };
        Some(Principals {
            by_key: HashMap::from([(root.access_key_id.clone(), root)]),
            max_skew: Duration::from_secs(a.max_skew_seconds),
        })
    }

    pub fn get(&self, access_key_id: &str) -> Option<&Principal> {
        self.by_key.get(access_key_id)
    }
}

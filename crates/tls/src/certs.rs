//! A certificate authority for a cluster, and the certificates it issues: what
//! `trellisctl certs` writes and the tests use. ECDSA P-256 keys; certificates valid for a
//! year (the CA for ten).
//!
//! The CA is known by its key: its subject is always [`CA_NAME`], so an authority re-made
//! from its key file ([`Authority::from_key_pem`]) issues certificates that chain to the CA
//! certificate written the first time.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result};

/// The subject common name of every Trellis CA.
pub const CA_NAME: &str = "Trellis CA";

fn rc(e: rcgen::Error) -> Error {
    Error::Verifier(format!("certificate generation: {e}"))
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A node: serves (client and peer ports) and connects to peers.
    Node,
    /// A client (a principal's certificate, `trellisctl --cert`).
    Client,
}

/// A CA: its certificate and key.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, in PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(p)
}

impl Authority {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Authority> {
        let key = KeyPair::generate().map_err(rc)?;
        Authority::with_key(key)
    }

    /// The CA whose key this is (written by [`Authority::key_pem`]).
    pub fn from_key_pem(pem: &str) -> Result<Authority> {
        Authority::with_key(KeyPair::from_pem(pem).map_err(rc)?)
    }

    fn with_key(key: KeyPair) -> Result<Authority> {
        let cert = ca_params()?.self_signed(&key).map_err(rc)?;
        Ok(Authority { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `name` (its subject common name: a node's name, or the principal a
    /// client certificate authenticates as), valid for `sans` (DNS names or IP addresses).
    pub fn issue(&self, name: &str, sans: &[String], usage: Usage) -> Result<Issued> {
        let mut p = CertificateParams::new(sans.to_vec()).map_err(rc)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = match usage {
            Usage::Node => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let now = std::time::SystemTime::now();
        p.not_before = (now - std::time::Duration::from_secs(3600)).into();
        p.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
        let key = KeyPair::generate().map_err(rc)?;
        let cert = p.signed_by(&key, &self.cert, &self.key).map_err(rc)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

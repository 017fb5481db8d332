//! AWS Signature Version 4, verified: the node recomputes the canonical request and the
//! string to sign from what arrived, derives the signing key from the principal's secret,
//! and compares the HMAC with the request's signature in constant time
//! (`hmac::Mac::verify_slice`). The date must be within the allowed skew of the node's
//! clock. Failures are AWS's exceptions, with AWS's messages.
//!
//! Only the `Authorization` header form is taken (what the SDKs and the CLI send to a JSON
//! API); presigned query strings and session tokens are refused.

use axum::http::HeaderMap;
use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use trellis_proto::{ApiError, Code};

use super::{Principal, Principals};

type HmacSha256 = Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// What a signature covers.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (already percent-encoded).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    scope: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn missing() -> ApiError {
    ApiError::new(
        Code::MissingAuthenticationTokenException,
        "Missing Authentication Token",
    )
}

fn incomplete(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::IncompleteSignatureException, message)
}

fn mismatch() -> ApiError {
    ApiError::new(
        Code::InvalidSignatureException,
        "The request signature we calculated does not match the signature you provided. Check \
         your AWS Secret Access Key and signing method. Consult the service documentation for \
         details.",
    )
}

/// The AWS API's check of a request (`POST` to `uri`): its signature when the node has
/// principals, nothing when it has none. The principal (`None` without principals); a
/// refusal is logged.
pub fn check<'p>(
    principals: Option<&'p Principals>,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<&'p Principal>, ApiError> {
    let Some(principals) = principals else {
        return Ok(None);
    };
    let req = Request {
        method: "POST",
        path: uri.path(),
        query: uri.query().unwrap_or_default(),
        headers,
        body,
    };
    let now = DateTime::<Utc>::from(std::time::SystemTime::now());
    match verify(principals, &req, now) {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            tracing::info!(code = %e.code, reason = %e.message, "AWS API request refused");
            Err(e)
        }
    }
}

/// Checks the request's signature; the principal who signed it.
pub fn verify<'p>(
    principals: &'p Principals,
    req: &Request<'_>,
    now: DateTime<Utc>,
) -> Result<&'p Principal, ApiError> {
    let Some(header) = req.headers.get("authorization") else {
        return Err(missing());
    };
    let header = header
        .to_str()
        .map_err(|_| incomplete("The Authorization header is not ASCII."))?;
    let auth = parse(header)?;
    let Some(principal) = principals.get(auth.access_key_id) else {
        return Err(ApiError::new(
            Code::UnrecognizedClientException,
            "The security token included in the request is invalid.",
        ));
    };
    if req.headers.contains_key("x-amz-security-token") {
        return Err(ApiError::new(
            Code::UnrecognizedClientException,
            "The security token included in the request is invalid.",
        ));
    }
    let stamp = header_text(req.headers, "x-amz-date").ok_or_else(|| {
        incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    })?;
    let when = NaiveDateTime::parse_from_str(&stamp, DATE_FORMAT)
        .map_err(|_| {
            incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{stamp}'."
            ))
        })?
        .and_utc();
    if !stamp.starts_with(auth.date) {
        return Err(ApiError::new(
            Code::InvalidSignatureException,
            format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{}' != '{}', from '{stamp}'.",
                auth.date,
                &stamp[..8.min(stamp.len())]
            ),
        ));
    }
    check_skew(when, now, principals.max_skew)?;
    if !auth.signed_headers.contains(&"host") {
        return Err(incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let payload = payload_hash(req)?;
    let canonical = canonical_request(req, &auth.signed_headers, &payload);
    let string_to_sign = format!(
        "{ALGORITHM}\n{stamp}\n{}\n{}",
        auth.scope,
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(&principal.secret, auth.scope);
    let given = unhex(auth.signature).ok_or_else(mismatch)?;
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| mismatch())?;
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&given).map_err(|_| mismatch())?;
    Ok(principal)
}

/// `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b,
/// Signature=hex`.
fn parse(header: &str) -> Result<Authorization<'_>, ApiError> {
    let Some(params) = header.strip_prefix(ALGORITHM) else {
        let algorithm = header.split_whitespace().next().unwrap_or_default();
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'"
        )));
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in params.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let required = |name: &str| {
        incomplete(format!(
            "Authorization header requires '{name}' parameter. Authorization={header}"
        ))
    };
    let credential = credential.ok_or_else(|| required("Credential"))?;
    let signed = signed.ok_or_else(|| required("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| required("Signature"))?;
    let Some((access_key_id, scope)) = credential.split_once('/') else {
        return Err(incomplete(format!(
            "Credential should be scoped to a valid region, not '{credential}'."
        )));
    };
    let parts: Vec<&str> = scope.split('/').collect();
    if parts.len() != 4 || parts[3] != "aws4_request" {
        return Err(incomplete(format!(
            "Credential should be scoped correctly: '{credential}'."
        )));
    }
    Ok(Authorization {
        access_key_id,
        date: parts[0],
        scope,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

fn check_skew(
    when: DateTime<Utc>,
    now: DateTime<Utc>,
    max: std::time::Duration,
) -> Result<(), ApiError> {
    let max = chrono::Duration::from_std(max).unwrap_or(chrono::Duration::MAX);
    let minutes = max.num_minutes();
    let fmt = |t: DateTime<Utc>| t.format(DATE_FORMAT).to_string();
    if when < now - max {
        return Err(ApiError::new(
            Code::InvalidSignatureException,
            format!(
                "Signature expired: {} is now earlier than {} ({} - {minutes} min.)",
                fmt(when),
                fmt(now - max),
                fmt(now)
            ),
        ));
    }
    if when > now + max {
        return Err(ApiError::new(
            Code::InvalidSignatureException,
            format!(
                "Signature not yet current: {} is still later than {} ({} + {minutes} min.)",
                fmt(when),
                fmt(now + max),
                fmt(now)
            ),
        ));
    }
    Ok(())
}

/// The body's SHA-256 (hex), or what `x-amz-content-sha256` says when it says
/// `UNSIGNED-PAYLOAD`; a stated hash must be the body's.
fn payload_hash(req: &Request<'_>) -> Result<String, ApiError> {
    let actual = hex(&Sha256::digest(req.body));
    match header_text(req.headers, "x-amz-content-sha256") {
        None => Ok(actual),
        Some(stated) if stated == "UNSIGNED-PAYLOAD" => Ok(stated),
        Some(stated) if stated == actual => Ok(actual),
        Some(_) => Err(ApiError::new(
            Code::InvalidSignatureException,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )),
    }
}

/// Method, path, sorted query, the signed headers (lowercase names, values trimmed with
/// inner runs of spaces made one, repeated headers joined by commas), their names, and the
/// payload's hash.
fn canonical_request(req: &Request<'_>, signed: &[&str], payload: &str) -> String {
    let mut query: Vec<(&str, &str)> = (req.query.split('&'))
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    query.sort_unstable();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signed {
        let values: Vec<String> = req
            .headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let path = if req.path.is_empty() { "/" } else { req.path };
    format!(
        "{}\n{path}\n{}\n{headers}\n{}\n{payload}",
        req.method,
        query.join("&"),
        signed.join(";")
    )
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
fn signing_key(secret: &str, scope: &str) -> Vec<u8> {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in scope.split('/') {
        // HMAC takes a key of any length.
        let Ok(mut mac) = HmacSha256::new_from_slice(&key) else {
            return Vec::new();
        };
        mac.update(part.as_bytes());
        key = mac.finalize().into_bytes().to_vec();
    }
    key
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthSection;

    /// Signed by botocore's `SigV4Auth` (key `TRELLISKEY`, secret `trellis-secret`, at
    /// 2026-12-01T05:00:00Z) for `POST http://127.0.0.1:8083/`.
    const SIGNATURE: &str = "8d9a38f86e01043b134e63b26b5528bb7b5a4cdc3322a84c6a967332aa061495";
    const BODY: &[u8] = br#"{"maxResults": 5}"#;

    fn principals(secret: &str) -> Principals {
        Principals::from_config(&AuthSection {
            root_access_key_id: "TRELLISKEY".into(),
            root_secret_access_key: secret.into(),
            max_skew_seconds: 900,
            ..Default::default()
        })
        .unwrap()
    }

    fn headers(signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |k: &'static str, v: String| {
            h.insert(k, v.parse().unwrap());
        };
        put("host", "127.0.0.1:8083".into());
        put("content-type", "application/x-amz-json-1.0".into());
        put("x-amz-target", "AWSStepFunctions.ListStateMachines".into());
        put("user-agent", "test".into());
        put("x-amz-date", "20261201T050000Z".into());
        put(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential=TRELLISKEY/20261201/us-east-1/states/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={signature}"
            ),
        );
        h
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
            .and_utc()
    }

    fn check(
        p: &Principals,
        h: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        let req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: h,
            body,
        };
        verify(p, &req, now).map(|p| p.name.clone())
    }

    fn code(r: Result<String, ApiError>) -> (Code, String) {
        let e = r.unwrap_err();
        (e.code, e.message)
    }

    #[test]
    fn a_botocore_signature_verifies() {
        let p = principals("trellis-secret");
        assert_eq!(
            check(&p, &headers(SIGNATURE), BODY, at(5, 3)).unwrap(),
            "root"
        );
        // An unsigned header may change; a signed one may not, nor the body.
        let mut h = headers(SIGNATURE);
        h.insert("user-agent", "other".parse().unwrap());
        assert!(check(&p, &h, BODY, at(5, 3)).is_ok());
        h.insert(
            "x-amz-target",
            "AWSStepFunctions.DeleteStateMachine".parse().unwrap(),
        );
        assert_eq!(
            code(check(&p, &h, BODY, at(5, 3))).0,
            Code::InvalidSignatureException
        );
        let tampered = code(check(&p, &headers(SIGNATURE), b"{}", at(5, 3)));
        assert_eq!(tampered.0, Code::InvalidSignatureException);
    }

    #[test]
    fn wrong_keys_dates_and_shapes_get_aws_errors() {
        let h = headers(SIGNATURE);
        // Another secret.
        let (c, m) = code(check(&principals("wrong"), &h, BODY, at(5, 3)));
        assert_eq!(c, Code::InvalidSignatureException);
        assert!(
            m.starts_with("The request signature we calculated does not match"),
            "{m}"
        );
        // An access key the node does not know.
        let other = Principals::from_config(&AuthSection {
            root_access_key_id: "OTHER".into(),
            root_secret_access_key: "trellis-secret".into(),
            max_skew_seconds: 900,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            code(check(&other, &h, BODY, at(5, 3))).0,
            Code::UnrecognizedClientException
        );
        // Too old, too new.
        let p = principals("trellis-secret");
        let (c, m) = code(check(&p, &h, BODY, at(5, 20)));
        assert_eq!(c, Code::InvalidSignatureException);
        assert_eq!(
            m,
            "Signature expired: 20261201T050000Z is now earlier than 20261201T050500Z \
             (20261201T052000Z - 15 min.)"
        );
        let (_, m) = code(check(&p, &h, BODY, at(4, 40)));
        assert!(m.starts_with("Signature not yet current"), "{m}");
        // No signature at all; one without its Signature; another algorithm.
        let mut none = h.clone();
        none.remove("authorization");
        assert_eq!(
            code(check(&p, &none, BODY, at(5, 3))),
            (
                Code::MissingAuthenticationTokenException,
                "Missing Authentication Token".into()
            )
        );
        let mut partial = h.clone();
        partial.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=TRELLISKEY/20261201/us-east-1/states/aws4_request, SignedHeaders=host"
                .parse()
                .unwrap(),
        );
        let (c, m) = code(check(&p, &partial, BODY, at(5, 3)));
        assert_eq!(c, Code::IncompleteSignatureException);
        assert!(m.contains("requires 'Signature'"), "{m}");
        let mut v2 = h.clone();
        v2.insert("authorization", "AWS3 x".parse().unwrap());
        assert_eq!(
            code(check(&p, &v2, BODY, at(5, 3))).0,
            Code::IncompleteSignatureException
        );
        // A signature that is not hex, or of another length.
        for bad in ["zz", "abc", ""] {
            let (c, _) = code(check(&p, &headers(bad), BODY, at(5, 3)));
            assert_eq!(c, Code::InvalidSignatureException, "{bad}");
        }
        // A session token is not something a node issues.
        let mut token = h.clone();
        token.insert("x-amz-security-token", "t".parse().unwrap());
        assert_eq!(
            code(check(&p, &token, BODY, at(5, 3))).0,
            Code::UnrecognizedClientException
        );
    }
}

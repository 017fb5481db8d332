//! SigV4 verification of arbitrary headers and bodies: a refusal with AWS's error, never a
//! panic, and never an acceptance of anything but the one signed request.
//!
//! The input is `AUTHORIZATION \n X-AMZ-DATE \n BODY`.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use trellis_server::auth::{sigv4, Principals};
use trellis_server::config::AuthSection;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(auth), Some(date)) = (parts.next(), parts.next()) else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    let principals = Principals::from_config(&AuthSection {
        root_access_key_id: "TRELLISKEY".into(),
        root_secret_access_key: "trellis-secret".into(),
        ..Default::default()
    })
    .unwrap();
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("127.0.0.1:8083"));
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    h.insert(
        "x-amz-target",
        HeaderValue::from_static("AWSStepFunctions.ListStateMachines"),
    );
    if let Ok(v) = HeaderValue::from_bytes(auth) {
        h.insert("authorization", v);
    }
    if let Ok(v) = HeaderValue::from_bytes(date) {
        h.insert("x-amz-date", v);
    }
    let req = sigv4::Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &h,
        body,
    };
    // A fixed clock: the day of the unit test's signed request.
    let now = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap()
        .and_hms_opt(5, 3, 0)
        .unwrap()
        .and_utc();
    if let Err(e) = sigv4::verify(&principals, &req, now) {
        assert!(!e.message.is_empty());
    }
});

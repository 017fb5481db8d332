//! What authentication and authorization cost per call: SigV4 verification of a signed
//! request, and one `Auth::allow` (rate limit and policy).
//!
//! `cargo bench -p trellis-server --bench auth`

use std::hint::black_box;

use axum::http::HeaderMap;
use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, Criterion};
use trellis_server::auth::{sigv4, Auth, Principals};
use trellis_server::config::{AuthSection, PrincipalConfig, RateSection};

/// The request and signature of `sigv4`'s unit test (signed by botocore).
fn signed() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "127.0.0.1:8083"),
        ("content-type", "application/x-amz-json-1.0"),
        ("x-amz-target", "AWSStepFunctions.ListStateMachines"),
        ("user-agent", "test"),
        ("x-amz-date", "20261201T050000Z"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=TRELLISKEY/20261201/us-east-1/states/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
             Signature=8d9a38f86e01043b134e63b26b5528bb7b5a4cdc3322a84c6a967332aa061495",
        ),
    ] {
        h.insert(k, v.parse().unwrap());
    }
    h
}

fn bench(c: &mut Criterion) {
    let section = AuthSection {
        root_access_key_id: "TRELLISKEY".into(),
        root_secret_access_key: "trellis-secret".into(),
        ..Default::default()
    };
    let principals = Principals::from_config(&section).unwrap();
    let headers = signed();
    let now = NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap()
        .and_hms_opt(5, 3, 0)
        .unwrap()
        .and_utc();
    let body = br#"{"maxResults": 5}"#;
    let req = sigv4::Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body,
    };
    assert!(sigv4::verify(&principals, &req, now).is_ok());
    c.bench_function("sigv4_verify", |b| {
        b.iter(|| sigv4::verify(black_box(&principals), black_box(&req), now).is_ok())
    });

    let toml = r#"
        name = "orders"
        tokens = ["orders-token-0123456789"]
        roles = ["read-only"]
        [[statements]]
        effect = "Allow"
        actions = ["states:StartExecution", "states:StopExecution"]
        resources = ["arn:aws:states:*:*:stateMachine:Orders*", "arn:aws:states:*:*:execution:Orders*:*"]
        [[statements]]
        effect = "Deny"
        actions = ["states:StartExecution"]
        resources = ["arn:aws:states:*:*:stateMachine:OrdersFrozen"]
    "#;
    let p: PrincipalConfig = toml::from_str(toml).unwrap();
    let section = AuthSection {
        principals: vec![p],
        rate: RateSection {
            start_burst: u32::MAX,
            start_per_second: u32::MAX,
            other_burst: u32::MAX,
            other_per_second: u32::MAX,
        },
        ..Default::default()
    };
    let auth = Auth::new(&section, "000000000000").unwrap();
    let who = auth
        .principals()
        .unwrap()
        .by_token("orders-token-0123456789")
        .unwrap();
    let machine = "arn:aws:states:us-east-1:000000000000:stateMachine:OrdersDaily";
    assert!(auth.allow(&who, "states:StartExecution", machine).is_ok());
    c.bench_function("auth_allow", |b| {
        b.iter(|| {
            auth.allow(black_box(&who), "states:StartExecution", black_box(machine))
                .is_ok()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

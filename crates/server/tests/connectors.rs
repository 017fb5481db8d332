//! `trellis run` against real local endpoints: an HTTPS server whose certificate comes from
//! a test CA, and an endpoint slower than the Task's `TimeoutSeconds`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A CA, and a certificate for `localhost` signed by it: (CA PEM, cert DER, key DER).
fn test_ca() -> (String, Vec<u8>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "trellis test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.der().to_vec(), key.serialize_der())
}

/// Serves one fixed JSON answer per connection, over TLS when `tls` is given, after
/// `delay`. Returns the port.
async fn serve(tls: Option<(Vec<u8>, Vec<u8>)>, delay: Duration, body: Value) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tls.map(|(cert, key)| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let answer = body.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            respond(s, delay, &answer).await;
                        }
                    }
                    None => respond(tcp, delay, &answer).await,
                }
            });
        }
    });
    port
}

async fn respond<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    delay: Duration,
    body: &str,
) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    tokio::time::sleep(delay).await;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Runs `trellis run` on `def` with extra arguments; returns its output line, parsed.
async fn trellis_run(dir: &Path, def: Value, args: &[&str]) -> Value {
    let path = dir.join(format!("def-{}.json", rand_name()));
    std::fs::write(&path, def.to_string()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trellis"));
    cmd.arg("run").arg(&path).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not one JSON line ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_invoke_over_https_with_an_extra_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert, key) = test_ca();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let port = serve(Some((cert, key)), Duration::ZERO, json!({"secure": true})).await;
    let def = json!({"StartAt": "Call", "States": {"Call": {
        "Type": "Task", "Resource": "arn:aws:states:::http:invoke",
        "Parameters": {"ApiEndpoint": format!("https://localhost:{port}/hello"), "Method": "GET"},
        "ResultSelector": {"body.$": "$.ResponseBody", "status.$": "$.StatusCode"},
        "End": true}}});

    let ok = trellis_run(
        dir.path(),
        def.clone(),
        &["--ca-file", ca_file.to_str().unwrap()],
    )
    .await;
    assert_eq!(
        ok,
        json!({"status": "SUCCEEDED", "output": {"body": {"secure": true}, "status": 200}})
    );

    // Without the CA, the server's certificate is not trusted.
    let refused = trellis_run(dir.path(), def, &[]).await;
    assert_eq!(refused["status"], "FAILED", "{refused}");
    assert_eq!(refused["error"], "States.Http.Socket", "{refused}");
    assert!(
        refused["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("certificate"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_timeout_during_a_slow_call_is_states_timeout_and_caught() {
    let dir = tempfile::tempdir().unwrap();
    let port = serve(None, Duration::from_secs(5), json!({"late": true})).await;
    let url = format!("http://127.0.0.1:{port}/slow");
    let def = json!({"StartAt": "Call", "States": {
        "Call": {"Type": "Task", "Resource": "arn:aws:states:::http:invoke",
                 "Parameters": {"ApiEndpoint": url, "Method": "GET"},
                 "TimeoutSeconds": 2,
                 "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "TimedOut"}],
                 "End": true},
        "TimedOut": {"Type": "Pass", "Parameters": {"caught.$": "$.error.Error"}, "End": true}}});
    let out = trellis_run(dir.path(), def.clone(), &["--history"]).await;
    assert_eq!(out["status"], "SUCCEEDED", "{out}");
    assert_eq!(out["output"], json!({"caught": "States.Timeout"}));
    let types: Vec<&str> = out["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"TaskTimedOut"), "{types:?}");
    assert!(!types.contains(&"TaskFailed"), "{types:?}");

    // Uncaught, the execution fails with States.Timeout.
    let mut uncaught = def;
    uncaught["States"]["Call"]
        .as_object_mut()
        .unwrap()
        .remove("Catch");
    uncaught["States"]
        .as_object_mut()
        .unwrap()
        .remove("TimedOut");
    let out = trellis_run(dir.path(), uncaught, &[]).await;
    assert_eq!(out["status"], "FAILED", "{out}");
    assert_eq!(out["error"], "States.Timeout", "{out}");

    // A Lambda function played by the same slow endpoint times out the same way.
    let lambda = json!({"StartAt": "F", "States": {"F": {
        "Type": "Task", "Resource": "arn:aws:lambda:us-east-1:000000000000:function:slow",
        "TimeoutSeconds": 2, "End": true}}});
    let out = trellis_run(
        dir.path(),
        lambda,
        &["--history", "--function", &format!("slow={url}")],
    )
    .await;
    assert_eq!(out["error"], "States.Timeout", "{out}");
    let types: Vec<&str> = out["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"LambdaFunctionTimedOut"), "{types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_execution_timeout_ends_a_run_while_a_call_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let port = serve(None, Duration::from_secs(5), json!({})).await;
    let def = json!({"TimeoutSeconds": 1, "StartAt": "Call", "States": {"Call": {
        "Type": "Task", "Resource": "arn:aws:states:::http:invoke",
        "Parameters": {"ApiEndpoint": format!("http://127.0.0.1:{port}/"), "Method": "GET"},
        "End": true}}});
    let out = trellis_run(dir.path(), def, &[]).await;
    assert_eq!(out["status"], "TIMED_OUT", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_iterations_call_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Each call takes 2 s; eight of them one after another would take 16 s, and the
    // execution's timeout is 10 s.
    let port = serve(None, Duration::from_secs(2), json!({"ok": 1})).await;
    let def = json!({"TimeoutSeconds": 10, "StartAt": "M", "States": {"M": {
        "Type": "Map", "ItemsPath": "$.items", "End": true,
        "ItemProcessor": {"StartAt": "Call", "States": {"Call": {
            "Type": "Task", "Resource": "arn:aws:states:::http:invoke",
            "Parameters": {"ApiEndpoint": format!("http://127.0.0.1:{port}/"), "Method": "GET"},
            "OutputPath": "$.ResponseBody", "End": true}}}}}});
    let out = trellis_run(
        dir.path(),
        def,
        &["--input", r#"{"items": [1, 2, 3, 4, 5, 6, 7, 8]}"#],
    )
    .await;
    assert_eq!(out["status"], "SUCCEEDED", "{out}");
    assert_eq!(out["output"].as_array().map(Vec::len), Some(8), "{out}");
}

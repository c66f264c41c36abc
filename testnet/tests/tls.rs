//! TLS on the peer API with real node processes: given a certificate and key,
//! a node serves wss:// and https:// only; clients that trust the certificate
//! (ZEROMESH_CA_CERT, as the command line reads it) are served, others are
//! refused by the TLS check, and plain ws:// gets no WebSocket.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeromesh::client::ApiClient;
use zeromesh_testnet::{zeromesh_binary, Testnet, TestnetOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_serves_the_api_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let output = std::process::Command::new(zeromesh_binary().unwrap())
        .args(["cert", "self-signed", "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The harness's clients, and the command line below, trust it this way.
    std::env::set_var(zeromesh::tls::CA_CERT_ENV, &cert);
    let options = TestnetOptions {
        args: vec![
            "--tls-cert".into(),
            cert.to_str().unwrap().into(),
            "--tls-key".into(),
            key.to_str().unwrap().into(),
        ],
        auth: true,
        ..Default::default()
    };
    let testnet = Testnet::start(2, options).await.expect("a 2-node TLS testnet starts");
    let api = testnet.nodes[1].address.api.clone();
    assert!(api.starts_with("wss://"), "{api}");
    assert!(testnet.status(1).await.is_ok(), "a client trusting the certificate is served");

    let (stranger, _) = zeromesh::tls::self_signed(&["localhost".into()]).unwrap();
    let refused = ApiClient::connect_trusting(&api, Some(stranger.into_bytes())).await.err().expect("refused");
    assert!(refused.to_string().contains("TLS"), "{refused}");
    let plain = ApiClient::connect(&api.replace("wss://", "ws://")).await;
    assert!(plain.is_err(), "plain ws:// reaches no WebSocket on a TLS port");

    // https:// for operators.
    let port: u16 = api.rsplit(':').next().unwrap().parse().unwrap();
    let config = zeromesh::tls::client_config(&std::fs::read(&cert).unwrap()).unwrap();
    let mut stream = zeromesh::tls::connect("127.0.0.1", port, config).await.expect("a TLS connection");
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut answer)).await.unwrap().ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let status = std::process::Command::new(zeromesh_binary().unwrap())
        .args(["status", "--node", &api])
        .env("ZEROMESH_TOKEN", testnet.admin_token.clone().expect("an admin token"))
        .output()
        .unwrap();
    assert!(status.status.success(), "the command line over wss://: {}", String::from_utf8_lossy(&status.stderr));
}

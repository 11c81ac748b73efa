//! TLS and mutual TLS on the listener, against the real binary with certificates made here: a
//! client that trusts the CA is served over TLS and a plaintext client is not; with a client CA
//! configured, only clients presenting a certificate that CA signed get an answer; the operator's
//! `status` command meets such a server; an unusable certificate stops start-up.

use std::path::{Path, PathBuf};
use std::process::Command;

use ledger_e2e::server::{ServerProcess, server_binary};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A CA and what it signed, written as PEM files into a directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.file(name)).unwrap()
    }

    /// A CA `name`, a server certificate for 127.0.0.1 and a client certificate, both signed by it.
    fn new(dir: &Path, name: &str) -> Self {
        let write = |file: &str, pem: String| std::fs::write(dir.join(file), pem).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        (ca_params.distinguished_name).push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        write(&format!("{name}-ca.pem"), ca.pem());
        for (who, names) in [("server", vec!["127.0.0.1".to_owned()]), ("client", vec![])] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            (params.distinguished_name).push(rcgen::DnType::CommonName, format!("{name} {who}"));
            let cert = params.signed_by(&key, &ca).unwrap();
            write(&format!("{name}-{who}.pem"), cert.pem());
            write(&format!("{name}-{who}.key"), key.serialize_pem());
        }
        Self {
            dir: dir.to_owned(),
        }
    }
}

/// Asks the health check over TLS, trusting `ca`, presenting `identity` if any.
async fn health(
    server: &ServerProcess,
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<i32, String> {
    // Two TLS crypto providers are linked in (through dependencies): name the one to use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://{}", server.addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|status| format!("{status:?}"))?;
    Ok(answer.into_inner().status)
}

const SERVING: Result<i32, String> =
    Ok(tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_its_ca_and_not_plaintext_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "acme");
    let data_dir = tempfile::tempdir().unwrap();
    let cert = pki.file("acme-server.pem");
    let key = pki.file("acme-server.key");
    let server = ServerProcess::start_with_env(
        data_dir.path(),
        &[],
        &[
            ("LEDGER_TLS_CERT", cert.to_str().unwrap()),
            ("LEDGER_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    assert_eq!(health(&server, pki.pem("acme-ca.pem"), None).await, SERVING);

    // A client that does not trust the CA refuses the server; a plaintext client gets nothing.
    let other = Pki::new(dir.path(), "other");
    assert!(
        health(&server, other.pem("other-ca.pem"), None)
            .await
            .is_err()
    );
    let plaintext = async {
        let channel = Endpoint::from_shared(server.endpoint())
            .unwrap()
            .connect()
            .await?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await;
        Ok::<_, tonic::transport::Error>(answer.is_ok())
    };
    assert!(
        !matches!(plaintext.await, Ok(true)),
        "answered in plaintext"
    );

    // The operator's status command meets it with --ca-cert.
    let token = server.token("acme", "ops", &["admin"]);
    let status = Command::new(server_binary())
        .args([
            "status",
            "--json",
            "--server",
            &format!("https://{}", server.addr()),
        ])
        .arg("--ca-cert")
        .arg(pki.file("acme-ca.pem"))
        .args(["--token", &token])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(json["projections"].is_array(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_answers_only_clients_with_a_certificate_its_ca_signed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "acme");
    let other = Pki::new(dir.path(), "other");
    let data_dir = tempfile::tempdir().unwrap();
    let cert = pki.file("acme-server.pem");
    let key = pki.file("acme-server.key");
    let client_ca = pki.file("acme-ca.pem");
    let server = ServerProcess::start_with_env(
        data_dir.path(),
        &[],
        &[
            ("LEDGER_TLS_CERT", cert.to_str().unwrap()),
            ("LEDGER_TLS_KEY", key.to_str().unwrap()),
            ("LEDGER_TLS_CLIENT_CA", client_ca.to_str().unwrap()),
        ],
    );
    let ca = || pki.pem("acme-ca.pem");
    let signed = (pki.pem("acme-client.pem"), pki.pem("acme-client.key"));
    assert_eq!(health(&server, ca(), Some(signed)).await, SERVING);
    assert!(
        health(&server, ca(), None).await.is_err(),
        "no client certificate"
    );
    let stranger = (other.pem("other-client.pem"), other.pem("other-client.key"));
    assert!(
        health(&server, ca(), Some(stranger)).await.is_err(),
        "a client certificate another CA signed"
    );
}

#[test]
fn an_unusable_certificate_stops_start_up_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for (cert, what) in [
        (
            dir.path().join("missing.pem"),
            "cannot read the TLS certificate",
        ),
        (garbage, "TLS"),
    ] {
        let output = Command::new(server_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&cert)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(what), "{stderr}");
        assert!(!data_dir.exists(), "the data directory was created");
    }
}

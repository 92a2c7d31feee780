//! TLS on the gRPC port: served when given a certificate and key, client certificates required
//! when given a CA, a renewed certificate used without a restart.

use roster_proto::v1 as pb;
use roster_proto::v1::auth_service_client::AuthServiceClient;
use roster_tests::tls::{Issued, TestCa};
use roster_tests::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The server's files in a directory of the test's.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(server: &Issued, client_ca: Option<&TestCa>) -> Self {
        let files = Self { dir: tempfile::tempdir().expect("temp dir") };
        files.write(server);
        if let Some(ca) = client_ca {
            std::fs::write(files.path("client-ca.pem"), ca.pem()).expect("write");
        }
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, server: &Issued) {
        std::fs::write(self.path("cert.pem"), &server.cert).expect("write");
        std::fs::write(self.path("key.pem"), &server.key).expect("write");
    }

    fn configure(&self, config: &mut Config, client_ca: bool) {
        config.tls_cert = Some(self.path("cert.pem"));
        config.tls_key = Some(self.path("key.pem"));
        config.tls_client_ca = client_ca.then(|| self.path("client-ca.pem"));
        config.reload_check_ms = 50;
    }
}

/// An endpoint to `addr` over TLS, trusting `ca`, presenting `identity` when given.
fn tls_endpoint(addr: SocketAddr, ca: &TestCa, identity: Option<&Issued>) -> Endpoint {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    Endpoint::from_shared(format!("https://{addr}")).expect("uri").tls_config(tls).expect("tls config")
}

/// Asserts a call failed for its connection (the handshake, or no HTTP/2 over it): tonic's
/// client says UNAVAILABLE or UNKNOWN "transport error"; the server answered nothing.
#[track_caller]
fn assert_no_connection(status: &tonic::Status) {
    assert!(matches!(status.code(), Code::Unavailable | Code::Unknown), "{status:?}");
    assert!(error_reason(status).is_none(), "the server answered: {status:?}");
}

/// WhoAmI with the service key over a new connection made from `endpoint`.
async fn who_am_i(endpoint: Endpoint) -> Result<(), tonic::Status> {
    let mut auth = AuthServiceClient::new(endpoint.connect_lazy());
    auth.who_am_i(service(pb::WhoAmIRequest {})).await.map(|_| ())
}

#[tokio::test]
async fn with_a_certificate_the_server_speaks_tls_only_and_takes_a_renewed_one_without_a_restart() {
    let ca = TestCa::new("Roster test CA");
    let files = Files::new(&ca.issue(&["localhost"]), None);
    let db = TestDatabase::fresh().await;
    let app =
        spawn_app_reached(db, |config, _| files.configure(config, false), |addr| tls_endpoint(addr, &ca, None)).await;

    // The harness's own channel is TLS: every call works as over plaintext.
    let ws = app.workspace("secure").await;
    let me = app.auth().who_am_i(bearer(&ws.admin_token, pb::WhoAmIRequest {})).await.expect("over TLS");
    assert!(me.into_inner().principal.is_some());

    // Plaintext is not served, nor TLS to a client that does not trust the certificate.
    let plaintext = Endpoint::from_shared(format!("http://{}", app.addr)).expect("uri");
    assert_no_connection(&who_am_i(plaintext).await.expect_err("plaintext refused"));
    let stranger = TestCa::new("Another CA");
    assert_no_connection(&who_am_i(tls_endpoint(app.addr, &stranger, None)).await.expect_err("untrusted"));

    // A renewed certificate from another CA is used for new connections within the check
    // interval; open connections go on.
    files.write(&stranger.issue(&["localhost"]));
    let renewed =
        eventually(Duration::from_secs(10), || async { who_am_i(tls_endpoint(app.addr, &stranger, None)).await.ok() })
            .await;
    assert!(renewed.is_some(), "the renewed certificate is served within 10 s");
    assert_no_connection(&who_am_i(tls_endpoint(app.addr, &ca, None)).await.expect_err("old CA"));
    app.auth().who_am_i(bearer(&ws.admin_token, pb::WhoAmIRequest {})).await.expect("the open connection goes on");

    // A broken renewal (a key that is not the certificate's) is ignored: the last good one stays.
    std::fs::write(files.path("key.pem"), ca.issue(&["localhost"]).key).expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    who_am_i(tls_endpoint(app.addr, &stranger, None)).await.expect("the certificate in force stays");
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_connect() {
    let server_ca = TestCa::new("Server CA");
    let client_ca = TestCa::new("Client CA");
    let router = client_ca.issue(&["router.internal"]);
    let files = Files::new(&server_ca.issue(&["localhost", "127.0.0.1"]), Some(&client_ca));
    let db = TestDatabase::fresh().await;
    let app = spawn_app_reached(
        db,
        |config, _| files.configure(config, true),
        |addr| tls_endpoint(addr, &server_ca, Some(&router)),
    )
    .await;

    who_am_i(tls_endpoint(app.addr, &server_ca, Some(&router))).await.expect("a client certificate of the CA");
    let without = who_am_i(tls_endpoint(app.addr, &server_ca, None)).await.expect_err("no client certificate");
    assert_no_connection(&without);
    let forged = TestCa::new("Client CA").issue(&["router.internal"]);
    let other = who_am_i(tls_endpoint(app.addr, &server_ca, Some(&forged))).await.expect_err("another CA's");
    assert_no_connection(&other);
    // A client certificate is not a credential: the call still needs its bearer secret.
    let mut auth = AuthServiceClient::new(tls_endpoint(app.addr, &server_ca, Some(&router)).connect_lazy());
    let anonymous = auth.who_am_i(pb::WhoAmIRequest {}).await.expect_err("no bearer");
    assert_status(&anonymous, Code::Unauthenticated, "CREDENTIALS_MISSING");
}

#[tokio::test]
async fn the_client_crate_connects_over_mutual_tls_and_reads_scope_refusals_as_reasons() {
    use roster_client::{Certificate as Ca, Client, ClientTlsConfig as Tls, Credential, Identity as Id, Reason};
    let server_ca = TestCa::new("Server CA");
    let client_ca = TestCa::new("Client CA");
    let router = client_ca.issue(&["router.internal"]);
    let files = Files::new(&server_ca.issue(&["localhost"]), Some(&client_ca));
    std::fs::write(
        files.path("keys.toml"),
        "[[key]]\nname = \"router\"\nsecrets = [\"router-secret-0123456789\"]\nmethods = [\"roster.v1.AuthService\"]\n",
    )
    .expect("write");
    let db = TestDatabase::fresh().await;
    let app = spawn_app_reached(
        db,
        |config, _| {
            files.configure(config, true);
            config.service_keys_file = Some(files.path("keys.toml"));
        },
        |addr| tls_endpoint(addr, &server_ca, Some(&router)),
    )
    .await;
    let port = app.addr.port();
    let tls =
        Tls::new().ca_certificate(Ca::from_pem(server_ca.pem())).identity(Id::from_pem(&router.cert, &router.key));
    let client = Client::builder(Credential::service_key("router-secret-0123456789").expect("credential"))
        .tls(tls)
        .connect(&format!("https://localhost:{port}"))
        .await
        .expect("connect over mutual TLS");
    let me = client.who_am_i().await.expect("in scope");
    assert_eq!(me.principal, Some(pb::who_am_i_response::Principal::ServiceKeyName("router".into())));
    let refused = client.get_workspace(pb::GetWorkspaceRequest { workspace_id: UNKNOWN_ID.into() }).await;
    let refused = refused.expect_err("out of scope");
    assert_eq!(refused.reason(), Some(&Reason::ServiceKeyOutOfScope), "{refused:?}");
    assert_eq!(refused.metadata("key"), Some("router"));
}

#[tokio::test]
async fn tls_files_that_do_not_make_an_identity_stop_the_start_and_name_the_file() {
    let ca = TestCa::new("Roster test CA");
    let issued = ca.issue(&["localhost"]);
    let other_key = ca.issue(&["localhost"]).key;
    let db = TestDatabase::fresh().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let (cert, key) = (write("cert.pem", &issued.cert), write("key.pem", &issued.key));
    let garbage = write("garbage.pem", "not a certificate");
    let wrong_key = write("wrong-key.pem", &other_key);
    let missing = dir.path().join("missing.pem");
    // --tls-cert, --tls-key, --tls-client-ca, and what the error names.
    let cases: [([Option<&Path>; 3], &str); 6] = [
        ([Some(&cert), None, None], "both --tls-cert and --tls-key"),
        ([None, Some(&key), None], "both --tls-cert and --tls-key"),
        ([None, None, Some(&cert)], "--tls-client-ca needs"),
        ([Some(&garbage), Some(&key), None], "garbage.pem"),
        ([Some(&cert), Some(&wrong_key), None], "do not make a server identity"),
        ([Some(&cert), Some(&missing), None], "missing.pem"),
    ];
    for ([cert, key, client_ca], expected) in cases {
        let mut config = test_config(&db.url);
        config.tls_cert = cert.map(Path::to_path_buf);
        config.tls_key = key.map(Path::to_path_buf);
        config.tls_client_ca = client_ca.map(Path::to_path_buf);
        let listeners = rosterd::Listeners {
            grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            metrics: None,
        };
        let err = rosterd::serve(config, listeners, std::future::pending()).await.expect_err("refused");
        let err = rosterd::error_chain(&err);
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }
}

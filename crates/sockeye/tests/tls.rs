//! `wss://` over real TLS on loopback, with certificates made by `rcgen` at test time: a trusted
//! certificate, a wrong host name, an unknown issuer, an expired certificate, client
//! certificates, verification turned off, and a certificate reloaded while the server runs.

use std::net::SocketAddr;

use sockeye::rustls::AlertDescription;
use sockeye::{
    ClientBuilder, Kind, MaybeTlsStream, Message, ServerBuilder, TlsAcceptor, TlsConfig, TlsFailure,
};
use sockeye_test_support::{Ca, Leaf, bounded, echo_server, listen};
use tokio::task::JoinHandle;

fn acceptor(leaf: &Leaf) -> TlsAcceptor {
    TlsAcceptor::from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap()
}

fn trusting(ca: &Ca) -> TlsConfig {
    TlsConfig::new()
        .webpki_roots(false)
        .add_root_pem(ca.pem().as_bytes())
        .unwrap()
}

async fn echo_once(url: &str, tls: TlsConfig) -> Result<(), sockeye::Error> {
    let (mut ws, _) = ClientBuilder::new(url).tls(tls).connect().await?;
    assert!(ws.get_ref().is_tls());
    ws.send(Message::text("over tls")).await?;
    let reply = ws.next().await.expect("a reply")?;
    assert_eq!(reply, Message::text("over tls"));
    ws.close(sockeye::CloseCode::NORMAL, "").await?;
    Ok(())
}

#[tokio::test]
async fn a_trusted_certificate_connects_by_name_and_by_address() {
    bounded(async {
        let ca = Ca::new("test ca");
        let leaf = ca.server(&["localhost", "127.0.0.1"]);
        let (addr, mut outcomes) = echo_server(ServerBuilder::new().tls(acceptor(&leaf))).await;
        let port = addr.port();
        echo_once(&format!("wss://127.0.0.1:{port}/"), trusting(&ca))
            .await
            .unwrap();
        outcomes.recv().await.unwrap().unwrap();
        echo_once(&format!("wss://localhost:{port}/chat"), trusting(&ca))
            .await
            .unwrap();
        outcomes.recv().await.unwrap().unwrap();
        // A large message crosses many TLS records.
        let (mut ws, _) = ClientBuilder::new(format!("wss://localhost:{port}/"))
            .tls(trusting(&ca))
            .connect()
            .await
            .unwrap();
        let big = Message::binary(vec![0xa5_u8; 3 << 20]);
        ws.send(big.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), big);
    })
    .await;
}

async fn failure_of(url: &str, tls: TlsConfig) -> (TlsFailure, sockeye::Error) {
    let e = ClientBuilder::new(url)
        .tls(tls)
        .connect()
        .await
        .map(|_| ())
        .expect_err("the connection must fail");
    let failure = e
        .tls_failure()
        .unwrap_or_else(|| panic!("not a TLS error: {e:?}"));
    (failure, e)
}

#[tokio::test]
async fn a_wrong_host_name_is_refused() {
    bounded(async {
        let ca = Ca::new("test ca");
        let leaf = ca.server(&["other.example"]);
        let (addr, mut outcomes) = echo_server(ServerBuilder::new().tls(acceptor(&leaf))).await;
        let (failure, e) = failure_of(&format!("wss://{addr}/"), trusting(&ca)).await;
        assert_eq!(failure, TlsFailure::WrongName, "{e}");
        assert!(
            e.to_string().contains("not valid for this host name"),
            "{e}"
        );
        // The server saw the client's alert.
        let server_side = outcomes.recv().await.unwrap().unwrap_err();
        assert_eq!(
            server_side.tls_failure(),
            Some(TlsFailure::PeerAlert(AlertDescription::BadCertificate)),
            "{server_side:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unknown_issuer_is_refused_with_our_roots_and_with_the_public_ones() {
    bounded(async {
        let ca = Ca::new("test ca");
        let stranger = Ca::new("another ca");
        let leaf = ca.server(&["127.0.0.1"]);
        let (addr, _outcomes) = echo_server(ServerBuilder::new().tls(acceptor(&leaf))).await;
        let url = format!("wss://{addr}/");
        let (failure, _) = failure_of(&url, trusting(&stranger)).await;
        assert_eq!(failure, TlsFailure::UnknownIssuer);
        // The default configuration trusts the Mozilla roots, which do not include ours.
        let (failure, _) = failure_of(&url, TlsConfig::new()).await;
        assert_eq!(failure, TlsFailure::UnknownIssuer);
        let e = sockeye::connect(&url).await.map(|_| ()).unwrap_err();
        assert_eq!(e.tls_failure(), Some(TlsFailure::UnknownIssuer), "{e}");
    })
    .await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    bounded(async {
        let ca = Ca::new("test ca");
        let leaf = ca.expired_server(&["127.0.0.1"]);
        let (addr, _outcomes) = echo_server(ServerBuilder::new().tls(acceptor(&leaf))).await;
        let (failure, e) = failure_of(&format!("wss://{addr}/"), trusting(&ca)).await;
        assert_eq!(failure, TlsFailure::Expired, "{e}");
    })
    .await;
}

#[tokio::test]
async fn turning_verification_off_accepts_any_certificate() {
    bounded(async {
        let ca = Ca::new("unknown ca");
        let leaf = ca.expired_server(&["other.example"]);
        let (addr, _outcomes) = echo_server(ServerBuilder::new().tls(acceptor(&leaf))).await;
        let tls = TlsConfig::new().dangerous_accept_any_certificate();
        assert!(!tls.verifies_certificates());
        echo_once(&format!("wss://{addr}/"), tls).await.unwrap();
    })
    .await;
}

/// Connects with `tls`, which must fail; the TLS failure each side saw.
async fn refused_both_ways(
    url: &str,
    tls: TlsConfig,
    outcomes: &mut tokio::sync::mpsc::UnboundedReceiver<Result<(), sockeye::Error>>,
) -> (TlsFailure, TlsFailure) {
    let (client_side, e) = failure_of(url, tls).await;
    let server_side = outcomes.recv().await.unwrap().unwrap_err();
    let server_failure = server_side
        .tls_failure()
        .unwrap_or_else(|| panic!("server side: {server_side:?}; client side: {e:?}"));
    (client_side, server_failure)
}

fn client_auth_server(server_leaf: &Leaf, client_ca: &Ca, optional: bool) -> TlsAcceptor {
    TlsAcceptor::builder(
        server_leaf.chain_pem.as_bytes(),
        server_leaf.key_pem.as_bytes(),
    )
    .unwrap()
    .client_roots_pem(client_ca.pem().as_bytes())
    .unwrap()
    .client_auth_optional(optional)
    .build()
    .unwrap()
}

#[tokio::test]
async fn client_certificates_are_required_and_verified() {
    bounded(async {
        let ca = Ca::new("server ca");
        let clients = Ca::new("client ca");
        let leaf = ca.server(&["127.0.0.1"]);
        let server = ServerBuilder::new().tls(client_auth_server(&leaf, &clients, false));
        let (addr, mut outcomes) = echo_server(server).await;
        let url = format!("wss://{addr}/");

        // With a certificate from the client CA: in, and the server sees it.
        let alice = clients.client("alice");
        let tls = trusting(&ca)
            .client_certificate_pem(alice.chain_pem.as_bytes(), alice.key_pem.as_bytes())
            .unwrap();
        echo_once(&url, tls).await.unwrap();
        outcomes.recv().await.unwrap().unwrap();

        // Without one: the server refuses.
        let (client_side, server_side) =
            refused_both_ways(&url, trusting(&ca), &mut outcomes).await;
        assert_eq!(
            client_side,
            TlsFailure::PeerAlert(AlertDescription::CertificateRequired)
        );
        assert_eq!(server_side, TlsFailure::NoClientCertificate);

        // With one from another CA: refused as an unknown issuer.
        let mallory = Ca::new("rogue ca").client("mallory");
        let tls = trusting(&ca)
            .client_certificate_pem(mallory.chain_pem.as_bytes(), mallory.key_pem.as_bytes())
            .unwrap();
        let (client_side, server_side) = refused_both_ways(&url, tls, &mut outcomes).await;
        assert_eq!(
            client_side,
            TlsFailure::PeerAlert(AlertDescription::UnknownCA)
        );
        assert_eq!(server_side, TlsFailure::UnknownIssuer);
    })
    .await;
}

/// A TLS server for two connections, one after the other, that keeps what `see` makes of each
/// connection's stream; each connection is read to its end.
async fn two_connections<T: Send + 'static>(
    tls: TlsAcceptor,
    see: impl Fn(&MaybeTlsStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<Vec<T>>) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let builder = ServerBuilder::new().tls(tls);
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = builder.accept_tcp(tcp).await.unwrap();
            seen.push(see(ws.get_ref()));
            while let Some(Ok(_)) = ws.next().await {}
        }
        seen
    });
    (addr, server)
}

#[tokio::test]
async fn the_server_sees_the_client_certificate() {
    bounded(async {
        let ca = Ca::new("server ca");
        let clients = Ca::new("client ca");
        let leaf = ca.server(&["127.0.0.1"]);
        let tls = client_auth_server(&leaf, &clients, true);
        let (addr, server) =
            two_connections(tls, |stream| stream.peer_certificates().map(<[_]>::len)).await;
        let bob = clients.client("bob");
        let with_cert = trusting(&ca)
            .client_certificate_pem(bob.chain_pem.as_bytes(), bob.key_pem.as_bytes())
            .unwrap();
        for tls in [with_cert, trusting(&ca)] {
            let (mut ws, _) = ClientBuilder::new(format!("wss://{addr}/"))
                .tls(tls)
                .connect()
                .await
                .unwrap();
            ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        }
        // Optional client auth: bob's chain (leaf and CA) the first time, nothing the second.
        assert_eq!(server.await.unwrap(), vec![Some(2), None]);
    })
    .await;
}

#[tokio::test]
async fn a_reloaded_certificate_serves_new_connections() {
    bounded(async {
        let old_ca = Ca::new("old ca");
        let new_ca = Ca::new("new ca");
        let tls = acceptor(&old_ca.server(&["127.0.0.1"]));
        let (addr, _outcomes) = echo_server(ServerBuilder::new().tls(tls.clone())).await;
        let url = format!("wss://{addr}/");
        echo_once(&url, trusting(&old_ca)).await.unwrap();
        tls.reload(&acceptor(&new_ca.server(&["127.0.0.1"])));
        echo_once(&url, trusting(&new_ca)).await.unwrap();
        let (failure, _) = failure_of(&url, trusting(&old_ca)).await;
        assert_eq!(failure, TlsFailure::UnknownIssuer);
    })
    .await;
}

#[test]
fn bad_pem_is_a_setup_error() {
    assert!(matches!(
        TlsAcceptor::from_pem(b"not pem", b"not pem"),
        Err(sockeye::TlsSetupError::NoCertificate)
    ));
    let ca = Ca::new("ca");
    let leaf = ca.server(&["x"]);
    let other = ca.server(&["y"]);
    // A key that is not the certificate's.
    assert!(TlsAcceptor::from_pem(leaf.chain_pem.as_bytes(), other.key_pem.as_bytes()).is_err());
    assert!(TlsConfig::new().add_root_pem(b"").is_err());
    let e =
        TlsAcceptor::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
}

#[tokio::test]
async fn no_roots_at_all_is_a_setup_error() {
    bounded(async {
        // The kernel completes TCP handshakes into the backlog, so connecting succeeds.
        let (_listener, addr) = listen().await;
        let e = ClientBuilder::new(format!("wss://{addr}/"))
            .tls(TlsConfig::new().webpki_roots(false))
            .connect()
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(e.kind(), Kind::TlsSetup(sockeye::TlsSetupError::NoRoots)),
            "{e:?}"
        );
        assert!(e.is_misuse());
    })
    .await;
}

#[tokio::test]
async fn alpn_says_http11_and_sni_names_the_host() {
    bounded(async {
        let ca = Ca::new("test ca");
        let tls = acceptor(&ca.server(&["localhost", "127.0.0.1"]));
        let (addr, server) = two_connections(tls, |stream| {
            (
                stream.alpn_protocol().map(<[u8]>::to_vec),
                stream.server_name().map(str::to_owned),
            )
        })
        .await;
        let port = addr.port();
        for host in ["localhost", "127.0.0.1"] {
            let (mut ws, _) = ClientBuilder::new(format!("wss://{host}:{port}/"))
                .tls(trusting(&ca))
                .connect()
                .await
                .unwrap();
            assert_eq!(ws.get_ref().alpn_protocol(), Some(&b"http/1.1"[..]));
            ws.close(sockeye::CloseCode::NORMAL, "").await.unwrap();
        }
        let http11 = Some(b"http/1.1".to_vec());
        // SNI carries a name, never an address.
        assert_eq!(
            server.await.unwrap(),
            vec![
                (http11.clone(), Some("localhost".to_owned())),
                (http11, None)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn over_tls_the_same_host_origin_must_be_https() {
    bounded(async {
        let ca = Ca::new("test ca");
        let tls = acceptor(&ca.server(&["localhost"]));
        let (addr, _outcomes) = echo_server(ServerBuilder::new().tls(tls)).await;
        let url = format!("wss://localhost:{}/", addr.port());
        let connect = |origin: String| {
            ClientBuilder::new(&url)
                .tls(trusting(&ca))
                .origin(http::HeaderValue::from_str(&origin).unwrap())
                .connect()
        };
        let (ws, _) = connect(format!("https://localhost:{}", addr.port()))
            .await
            .unwrap();
        drop(ws);
        // A page of the plain-http site on the same host and port may not use the TLS server.
        let e = connect(format!("http://localhost:{}", addr.port()))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.status(), Some(http::StatusCode::FORBIDDEN), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn a_self_signed_certificate_trusted_as_it_is_connects_by_its_names_only() {
    bounded(async {
        let leaf = Leaf::self_signed(&["localhost"]);
        let trusted = || {
            TlsConfig::new()
                .webpki_roots(false)
                .add_root_pem(leaf.chain_pem.as_bytes())
                .unwrap()
        };
        let (addr, _outcomes) = echo_server(ServerBuilder::new().tls(acceptor(&leaf))).await;
        let port = addr.port();
        // Exactly the certificate that was trusted, for its own name: accepted, as curl does.
        echo_once(&format!("wss://localhost:{port}/"), trusted())
            .await
            .unwrap();
        // The name is still checked.
        let (failure, _) = failure_of(&format!("wss://127.0.0.1:{port}/"), trusted()).await;
        assert_eq!(failure, TlsFailure::WrongName);
        // Another certificate of the same form is not trusted by this one.
        let other = Leaf::self_signed(&["localhost"]);
        let config = TlsConfig::new()
            .webpki_roots(false)
            .add_root_pem(other.chain_pem.as_bytes())
            .unwrap();
        let (failure, _) = failure_of(&format!("wss://localhost:{port}/"), config).await;
        assert_ne!(failure, TlsFailure::WrongName);
    })
    .await;
}

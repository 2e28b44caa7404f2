//! Runs the examples of `examples/` (and `sockeye-proto`'s `std_net_echo`) against loopback:
//! each test calls the functions the example's `main` calls and checks what the example says
//! it shows. The docs (`docs/tutorial.md`, `docs/how-to/`) quote these files.

use std::net::SocketAddr;

use http::HeaderValue;
use http::header::COOKIE;
use sockeye::{ClientBuilder, CloseCode, Message, ServerBuilder, TlsAcceptor, TlsConfig};
use sockeye_test_support::{Ca, TempDir, bounded, listen, listen_blocking, tinyproxy};

#[allow(dead_code)]
#[path = "../examples/echo.rs"]
mod echo;

#[allow(dead_code)]
#[path = "../examples/client.rs"]
mod client;

#[allow(dead_code)]
#[path = "../examples/blocking_client.rs"]
mod blocking_client;

#[allow(dead_code)]
#[path = "../examples/tls_server.rs"]
mod tls_server;

#[allow(dead_code)]
#[path = "../examples/proxy_client.rs"]
mod proxy_client;

#[allow(dead_code)]
#[path = "../examples/auth.rs"]
mod auth;

#[allow(dead_code)]
#[path = "../../sockeye-proto/examples/std_net_echo.rs"]
mod std_net_echo;

/// The `echo` example on a fresh loopback port.
async fn echo_example() -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(echo::serve(listener));
    addr
}

#[tokio::test]
async fn echo_echoes_text_and_binary_and_closes_cleanly() {
    bounded(async {
        let addr = echo_example().await;
        let (mut ws, _) = sockeye::connect(&format!("ws://{addr}/")).await.unwrap();
        ws.send(Message::text("hello")).await.unwrap();
        ws.send(Message::binary(vec![0_u8, 1, 2])).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0_u8, 1, 2])
        );
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        assert!(ws.next().await.is_none(), "the close handshake completed");
    })
    .await;
}

#[tokio::test]
async fn client_gets_an_answer_to_each_message() {
    bounded(async {
        let addr = echo_example().await;
        let texts = vec!["one".to_owned(), "two".to_owned()];
        let answers = client::ask(&format!("ws://{addr}/"), &texts).await.unwrap();
        assert_eq!(answers, vec![Message::text("one"), Message::text("two")]);
    })
    .await;
}

#[tokio::test]
async fn blocking_client_gets_an_answer_to_each_message() {
    bounded(async {
        let addr = echo_example().await;
        let url = format!("ws://{addr}/");
        let texts = vec!["hello".to_owned(), "world".to_owned()];
        let sent = texts.clone();
        let answers =
            tokio::task::spawn_blocking(move || blocking_client::round_trips(&url, &sent))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(answers, texts);
    })
    .await;
}

fn trusting(ca: &Ca) -> TlsConfig {
    TlsConfig::new()
        .webpki_roots(false)
        .add_root_pem(ca.pem().as_bytes())
        .unwrap()
}

async fn wss_echo(url: &str, ca: &Ca) -> Result<(), sockeye::Error> {
    let (mut ws, _) = ClientBuilder::new(url).tls(trusting(ca)).connect().await?;
    ws.send(Message::text("secret")).await?;
    assert_eq!(ws.next().await.unwrap()?, Message::text("secret"));
    ws.close(CloseCode::NORMAL, "").await
}

#[tokio::test]
async fn tls_server_reloads_its_certificate_for_new_connections() {
    bounded(async {
        let dir = TempDir::new("tls-server-example");
        let (chain, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
        let (chain, key) = (chain.to_str().unwrap(), key.to_str().unwrap());
        let write = |ca: &Ca| {
            let leaf = ca.server(&["localhost"]);
            std::fs::write(chain, &leaf.chain_pem).unwrap();
            std::fs::write(key, &leaf.key_pem).unwrap();
        };
        let (old, new) = (Ca::new("old ca"), Ca::new("new ca"));
        write(&old);
        let acceptor = TlsAcceptor::from_pem_files(chain, key).unwrap();
        let (listener, addr) = listen().await;
        tokio::spawn(tls_server::serve(
            listener,
            ServerBuilder::new().tls(acceptor.clone()),
        ));
        let url = format!("wss://localhost:{}/", addr.port());
        wss_echo(&url, &old).await.unwrap();
        assert!(wss_echo(&url, &new).await.unwrap_err().is_tls());

        // A connection opened before the reload keeps its certificate and goes on working.
        let (mut before, _) = ClientBuilder::new(&url)
            .tls(trusting(&old))
            .connect()
            .await
            .unwrap();
        write(&new);
        tls_server::reload(&acceptor, chain, key).unwrap();
        wss_echo(&url, &new).await.unwrap();
        assert!(wss_echo(&url, &old).await.unwrap_err().is_tls());
        before.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            before.next().await.unwrap().unwrap(),
            Message::text("still here")
        );

        // A file that is not a certificate is refused and the one in use stays.
        std::fs::write(chain, "not a certificate").unwrap();
        assert!(tls_server::reload(&acceptor, chain, key).is_err());
        wss_echo(&url, &new).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn proxy_client_reaches_the_server_through_tinyproxy() {
    bounded(async {
        let Some(proxy) = tinyproxy("").await else {
            return;
        };
        let addr = echo_example().await;
        let answer = proxy_client::ask_through(
            &format!("http://127.0.0.1:{}", proxy.port),
            &format!("ws://{addr}/"),
            "through the tunnel",
        )
        .await
        .unwrap();
        assert_eq!(answer, "through the tunnel");
        // A proxy that is not there is named as the failure, not the server.
        let error = proxy_client::ask_through(
            &format!("http://127.0.0.1:{}", sockeye_test_support::free_port()),
            &format!("ws://{addr}/"),
            "x",
        )
        .await
        .unwrap_err();
        let error = error.downcast::<sockeye::Error>().unwrap();
        assert!(error.is_connect(), "{error}");
    })
    .await;
}

#[tokio::test]
async fn auth_admits_a_cookie_or_a_token_and_refuses_the_rest() {
    bounded(async {
        let (listener, addr) = listen().await;
        tokio::spawn(auth::serve(listener, auth::server()));
        let url = format!("ws://{addr}/");
        let greeting = |client: ClientBuilder| async move {
            let (mut ws, _) = client.connect().await?;
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                panic!("no greeting");
            };
            ws.close(CloseCode::NORMAL, "").await?;
            Ok::<_, sockeye::Error>(text.to_string())
        };
        let with_cookie = ClientBuilder::new(&url).header(
            COOKIE,
            HeaderValue::from_static("theme=dark; session=s3cret"),
        );
        assert_eq!(greeting(with_cookie).await.unwrap(), "welcome, ann");
        let with_token = ClientBuilder::new(format!("{url}?token=t0ken"));
        assert_eq!(greeting(with_token).await.unwrap(), "welcome, bob");

        let refused = greeting(ClientBuilder::new(&url)).await.unwrap_err();
        assert_eq!(refused.status(), Some(http::StatusCode::UNAUTHORIZED));
        let wrong = ClientBuilder::new(&url).header(COOKIE, HeaderValue::from_static("session=no"));
        let refused = greeting(wrong).await.unwrap_err();
        assert_eq!(refused.status(), Some(http::StatusCode::UNAUTHORIZED));
        // The browser sends the cookie from another site's page too: the Origin check stops it.
        let foreign = ClientBuilder::new(&url)
            .header(COOKIE, HeaderValue::from_static("session=s3cret"))
            .origin(HeaderValue::from_static("https://evil.example"));
        let refused = greeting(foreign).await.unwrap_err();
        assert_eq!(refused.status(), Some(http::StatusCode::FORBIDDEN));
    })
    .await;
}

#[tokio::test]
async fn std_net_echo_drives_the_core_without_a_runtime() {
    bounded(async {
        let (listener, addr) = listen_blocking();
        let server = sockeye::proto::handshake::ServerHandshake::new();
        let connection = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            std_net_echo::serve(&server, tcp)
        });
        let (mut ws, _) = sockeye::connect(&format!("ws://{addr}/")).await.unwrap();
        ws.send(Message::text("no runtime")).await.unwrap();
        ws.send(Message::binary(vec![7_u8; 100_000])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("no runtime")
        );
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![7_u8; 100_000])
        );
        ws.close(CloseCode::NORMAL, "bye").await.unwrap();
        assert!(ws.next().await.is_none());
        let code = tokio::task::spawn_blocking(move || connection.join().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, Some(CloseCode::NORMAL));
    })
    .await;
}

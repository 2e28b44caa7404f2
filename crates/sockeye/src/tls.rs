//! TLS for `wss://`, with rustls: [`TlsConfig`] for clients, [`TlsAcceptor`] for servers, and
//! [`TlsError`] saying why a TLS handshake failed.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "blocking")]
use crate::net;

/// The only application protocol a WebSocket handshake speaks (RFC 6455 runs over HTTP/1.1).
const ALPN_HTTP11: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A TLS setting that could not be built: unreadable or malformed PEM, a key that does not
/// match, no usable root certificate.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A PEM file could not be read.
    Read {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// PEM text held no certificate, or a malformed one.
    NoCertificate,
    /// PEM text held no private key, or a malformed one.
    NoPrivateKey,
    /// No root certificate could be loaded (the platform's store was empty or unreadable).
    NoRoots,
    /// rustls refused the configuration (a key that does not match its certificate, say).
    Rustls(rustls::Error),
    /// rustls refused the client-certificate roots.
    ClientVerifier(rustls::server::VerifierBuilderError),
    /// The host to connect to is not a valid TLS server name.
    ServerName(String),
    /// The server chose another application protocol than `http/1.1` (possible only with a
    /// rustls config of the caller's that offered one).
    Alpn(String),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read {path}: {source}"),
            Self::NoCertificate => f.write_str("no valid certificate in the PEM input"),
            Self::NoPrivateKey => f.write_str("no valid private key in the PEM input"),
            Self::NoRoots => f.write_str("no usable root certificate"),
            Self::Rustls(e) => write!(f, "TLS configuration refused: {e}"),
            Self::ClientVerifier(e) => write!(f, "client certificate verifier refused: {e}"),
            Self::ServerName(host) => write!(f, "{host:?} is not a valid TLS server name"),
            Self::Alpn(protocol) => {
                write!(
                    f,
                    "the server chose ALPN protocol {protocol:?}, not http/1.1"
                )
            }
        }
    }
}

impl std::error::Error for TlsSetupError {
    /// What the message does not already say: the text of the cause is part of it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => source.source(),
            Self::Rustls(e) => e.source(),
            Self::ClientVerifier(e) => e.source(),
            Self::NoCertificate
            | Self::NoPrivateKey
            | Self::NoRoots
            | Self::ServerName(_)
            | Self::Alpn(_) => None,
        }
    }
}

impl From<rustls::Error> for TlsSetupError {
    fn from(e: rustls::Error) -> Self {
        Self::Rustls(e)
    }
}

impl From<rustls::server::VerifierBuilderError> for TlsSetupError {
    fn from(e: rustls::server::VerifierBuilderError) -> Self {
        Self::ClientVerifier(e)
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in `pem`; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsSetupError::NoCertificate)?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate);
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsSetupError::NoPrivateKey)
}

/// A certificate chain and its key, shared cheaply between clones of a config.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsSetupError> {
        Ok(Self {
            chain: certificates(chain_pem)?,
            key: private_key(key_pem)?,
        })
    }
}

/// The TLS settings of a client: which certificates it trusts, the certificate it presents.
///
/// By default the server's certificate is verified against the Mozilla root store
/// (`webpki-roots`) and its host name, SNI is sent, and ALPN offers `http/1.1`, preceded by
/// `h2` when the client may use HTTP/2 ([`Http2Policy`](crate::Http2Policy)).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let ca = std::fs::read("ca.pem")?;
/// let tls = sockeye::TlsConfig::new().add_root_pem(&ca)?;
/// let (ws, _) = sockeye::ClientBuilder::new("wss://internal.example/feed")
///     .tls(tls)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct TlsConfig {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Build(Settings),
    Rustls(Arc<ClientConfig>),
}

#[derive(Clone)]
struct Settings {
    webpki_roots: bool,
    native_roots: bool,
    extra_roots: Vec<CertificateDer<'static>>,
    identity: Option<Arc<Identity>>,
    verify: bool,
    /// The rustls config built from these settings, shared by clones until one changes.
    built: Arc<OnceLock<Arc<ClientConfig>>>,
}

impl Settings {
    fn build(&self) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let Self {
            webpki_roots,
            native_roots,
            extra_roots,
            identity,
            verify,
            built: _,
        } = self;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = if *verify {
            let mut roots = RootCertStore::empty();
            if *webpki_roots {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            if *native_roots {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::debug!(error = %e, "skipping a platform root certificate");
                }
                let (added, ignored) = roots.add_parsable_certificates(found.certs);
                tracing::debug!(added, ignored, "platform root certificates");
            }
            for cert in extra_roots {
                roots.add(cert.clone())?;
            }
            if roots.is_empty() {
                return Err(TlsSetupError::NoRoots);
            }
            if extra_roots.is_empty() {
                builder.with_root_certificates(roots)
            } else {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| {
                            TlsSetupError::Rustls(rustls::Error::General(e.to_string()))
                        })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(TrustedLeaf {
                        webpki,
                        leaves: extra_roots.clone(),
                    }))
            }
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                    provider().signature_verification_algorithms,
                )))
        };
        let mut config = match identity {
            Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Where the default settings' rustls config is kept: one per process, since every
/// `TlsConfig::new()` would build the same (parsing the Mozilla roots each time).
fn default_cache() -> Arc<OnceLock<Arc<ClientConfig>>> {
    static CACHE: OnceLock<Arc<OnceLock<Arc<ClientConfig>>>> = OnceLock::new();
    CACHE.get_or_init(Arc::default).clone()
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsConfig {
    /// Trust the Mozilla root store, present no client certificate.
    pub fn new() -> Self {
        Self {
            source: Source::Build(Settings {
                webpki_roots: true,
                native_roots: false,
                extra_roots: Vec::new(),
                identity: None,
                verify: true,
                built: default_cache(),
            }),
        }
    }

    /// A rustls configuration of the caller's own, used as it is (set its ALPN to `http/1.1`),
    /// except that its ALPN list is replaced by `h2`, `http/1.1` when the client may use HTTP/2
    /// ([`Http2Policy::Prefer`](crate::Http2Policy::Prefer), the default for `wss://`, or
    /// `Require`).
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        Self {
            source: Source::Rustls(config),
        }
    }

    /// The settings to change; `None` for a rustls config of the caller's, which is kept whole.
    fn settings(&mut self) -> Option<&mut Settings> {
        match &mut self.source {
            Source::Build(settings) => {
                settings.built = Arc::default();
                Some(settings)
            }
            Source::Rustls(_) => None,
        }
    }

    /// Whether to trust the Mozilla root store (`webpki-roots`); on by default. Turn it off to
    /// trust only the roots added here.
    pub fn webpki_roots(mut self, on: bool) -> Self {
        if let Some(s) = self.settings() {
            s.webpki_roots = on;
        }
        self
    }

    /// Whether to trust the platform's root store as well (`rustls-native-certs`: the system's
    /// CA bundle, `SSL_CERT_FILE`, `SSL_CERT_DIR`); off by default.
    pub fn native_roots(mut self, on: bool) -> Self {
        if let Some(s) = self.settings() {
            s.native_roots = on;
        }
        self
    }

    /// Trusts one more root certificate.
    pub fn add_root(mut self, certificate: CertificateDer<'static>) -> Self {
        if let Some(s) = self.settings() {
            s.extra_roots.push(certificate);
        }
        self
    }

    /// Trusts every certificate in `pem`.
    ///
    /// # Errors
    /// `pem` holds no valid certificate.
    pub fn add_root_pem(mut self, pem: &[u8]) -> Result<Self, TlsSetupError> {
        let certs = certificates(pem)?;
        if let Some(s) = self.settings() {
            s.extra_roots.extend(certs);
        }
        Ok(self)
    }

    /// Presents this certificate chain (leaf first) and key to servers that ask for one.
    ///
    /// # Errors
    /// No certificate or no key in the PEM text.
    pub fn client_certificate_pem(
        mut self,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsSetupError> {
        let id = Identity::from_pem(chain_pem, key_pem)?;
        if let Some(s) = self.settings() {
            s.identity = Some(Arc::new(id));
        }
        Ok(self)
    }

    /// **Turns off certificate verification**: any certificate, from anyone, for any name, is
    /// accepted, so anyone on the path can read and change the traffic. For tests against
    /// self-signed servers only; prefer [`add_root_pem`](Self::add_root_pem).
    pub fn dangerous_accept_any_certificate(mut self) -> Self {
        if let Some(s) = self.settings() {
            s.verify = false;
        }
        self
    }

    /// Whether this config verifies certificates: false after
    /// [`dangerous_accept_any_certificate`](Self::dangerous_accept_any_certificate); a rustls
    /// config of the caller's counts as verifying, whatever its verifier.
    pub fn verifies_certificates(&self) -> bool {
        match &self.source {
            Source::Build(s) => s.verify,
            Source::Rustls(_) => true,
        }
    }

    /// The rustls configuration, built once per settings (and once per process for the
    /// default ones).
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, TlsSetupError> {
        match &self.source {
            Source::Rustls(config) => Ok(config.clone()),
            Source::Build(settings) => {
                if let Some(config) = settings.built.get() {
                    return Ok(config.clone());
                }
                let config = settings.build()?;
                Ok(settings.built.get_or_init(|| config).clone())
            }
        }
    }

    /// Runs the TLS handshake over `stream` for `host`.
    pub(crate) async fn connect<S>(
        &self,
        host: &str,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, TlsHandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.client_config()?;
        let name = server_name(host)?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(TlsHandshakeError::from_io)?;
        check_alpn(stream.get_ref().1.alpn_protocol())?;
        Ok(stream)
    }

    /// Runs the TLS handshake over `stream` for `host`, offering ALPN `h2` then `http/1.1` (an
    /// HTTP/2 client, RFC 8441, that can fall back). The caller reads what the server chose:
    /// `h2`, `http/1.1` or nothing; any other choice is an error, as for [`connect`](Self::connect).
    #[cfg(feature = "http2")]
    pub(crate) async fn connect_h2<S>(
        &self,
        host: &str,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, TlsHandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut config = ClientConfig::clone(&*self.client_config()?);
        config.alpn_protocols = vec![b"h2".to_vec(), ALPN_HTTP11.to_vec()];
        let name = server_name(host)?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(TlsHandshakeError::from_io)?;
        let alpn = stream.get_ref().1.alpn_protocol();
        if alpn != Some(b"h2") {
            check_alpn(alpn)?;
        }
        Ok(stream)
    }

    /// TLS over a blocking TCP connection, the handshake done before `deadline` (an I/O error
    /// of kind `TimedOut` or `WouldBlock` after it).
    #[cfg(feature = "blocking")]
    pub(crate) fn connect_blocking(
        &self,
        host: &str,
        mut tcp: std::net::TcpStream,
        deadline: std::time::Instant,
    ) -> Result<BlockingTlsStream, TlsHandshakeError> {
        let config = self.client_config()?;
        let name = server_name(host)?;
        let mut conn = rustls::ClientConnection::new(config, name).map_err(TlsSetupError::from)?;
        while conn.is_handshaking() {
            net::until(&tcp, deadline).map_err(TlsHandshakeError::Io)?;
            conn.complete_io(&mut tcp)
                .map_err(TlsHandshakeError::from_io)?;
        }
        check_alpn(conn.alpn_protocol())?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }
}

/// A client's TLS over a blocking TCP connection.
#[cfg(feature = "blocking")]
pub(crate) type BlockingTlsStream =
    rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// `host` as the TLS server name (SNI is sent for names, not for addresses).
fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsSetupError::ServerName(host.to_owned()))
}

/// RFC 6455 runs over HTTP/1.1: a server that chose another protocol (h2, with a rustls config
/// of the caller's that offered it) cannot take the upgrade.
fn check_alpn(alpn: Option<&[u8]>) -> Result<(), TlsSetupError> {
    match alpn {
        Some(alpn) if alpn != ALPN_HTTP11 => Err(TlsSetupError::Alpn(
            String::from_utf8_lossy(alpn).into_owned(),
        )),
        _ => Ok(()),
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Build(Settings {
                webpki_roots,
                native_roots,
                extra_roots,
                identity,
                verify,
                built: _,
            }) => f
                .debug_struct("TlsConfig")
                .field("webpki_roots", webpki_roots)
                .field("native_roots", native_roots)
                .field("extra_roots", &extra_roots.len())
                .field("client_certificate", &identity.is_some())
                .field("verify", verify)
                .finish(),
            Source::Rustls(_) => f.write_str("TlsConfig(rustls)"),
        }
    }
}

/// The usual verification, and one allowance for a certificate added with
/// [`TlsConfig::add_root`]: when the server presents exactly that certificate, and webpki
/// refuses it only for its form (a self-signed certificate made the usual way is marked as a
/// CA, which webpki will not take as a server's own), it is accepted if it names the host, as
/// curl and browsers' exceptions accept a certificate trusted as such. Expiry, a wrong name
/// and any other certificate keep their errors.
#[derive(Debug)]
struct TrustedLeaf {
    webpki: Arc<WebPkiServerVerifier>,
    leaves: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for TrustedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(why)))
                if self
                    .leaves
                    .iter()
                    .any(|leaf| leaf.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                tracing::debug!(%why, "accepting the server's certificate, trusted as it is");
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The verifier behind [`TlsConfig::dangerous_accept_any_certificate`]: the certificate is not
/// checked, the handshake signatures still are (so the connection is at least consistent).
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A server's TLS: its certificate and key, and optionally the roots its clients' certificates
/// must chain to. Cloning shares it; [`reload`](Self::reload) swaps the certificate for new
/// connections without a restart.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = sockeye::TlsAcceptor::from_pem_files("cert.pem", "key.pem")?;
/// let server = sockeye::ServerBuilder::new().tls(tls);
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
/// let (tcp, _) = listener.accept().await?;
/// let ws = server.accept_tcp(tcp).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsAcceptor {
    /// From a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// Unreadable files, no certificate, no key, or a key rustls refuses.
    pub fn from_pem_files(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsSetupError> {
        TlsAcceptorBuilder::from_pem_files(chain, key)?.build()
    }

    /// From PEM text: a certificate chain (leaf first) and a private key.
    ///
    /// # Errors
    /// As [`from_pem_files`](Self::from_pem_files).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsSetupError> {
        TlsAcceptorBuilder::from_pem(chain_pem, key_pem)?.build()
    }

    /// A builder, for client certificates.
    ///
    /// # Errors
    /// As [`from_pem`](Self::from_pem).
    pub fn builder(chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptorBuilder, TlsSetupError> {
        TlsAcceptorBuilder::from_pem(chain_pem, key_pem)
    }

    /// A rustls configuration of the caller's own (set its ALPN to `http/1.1`, or to `h2` and
    /// `http/1.1` as [`TlsAcceptorBuilder::alpn_protocols`] says).
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        Self {
            config: Arc::new(RwLock::new(config)),
        }
    }

    /// Uses `other`'s configuration for every connection accepted from now on; connections
    /// already open keep theirs. For certificate renewal without a restart.
    pub fn reload(&self, other: &Self) {
        let new = other.current();
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Runs the server side of the TLS handshake.
    ///
    /// # Errors
    /// The handshake failed ([`TlsHandshakeError::Tls`] says why) or the transport did.
    pub async fn accept<S>(
        &self,
        stream: S,
    ) -> Result<tokio_rustls::server::TlsStream<S>, TlsHandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tokio_rustls::TlsAcceptor::from(self.current())
            .accept(stream)
            .await
            .map_err(TlsHandshakeError::from_io)
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

/// Builds a [`TlsAcceptor`] that asks for client certificates.
#[must_use]
pub struct TlsAcceptorBuilder {
    identity: Identity,
    client_roots: Option<RootCertStore>,
    client_auth_optional: bool,
    alpn: Vec<Vec<u8>>,
}

impl TlsAcceptorBuilder {
    /// From a PEM certificate chain file (leaf first) and a PEM private key file.
    ///
    /// # Errors
    /// As [`TlsAcceptor::from_pem_files`].
    pub fn from_pem_files(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsSetupError> {
        Self::from_pem(&read_file(chain.as_ref())?, &read_file(key.as_ref())?)
    }

    fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsSetupError> {
        Ok(Self {
            identity: Identity::from_pem(chain_pem, key_pem)?,
            client_roots: None,
            client_auth_optional: false,
            alpn: vec![ALPN_HTTP11.to_vec()],
        })
    }

    /// The application protocols offered by ALPN, in order of preference; `http/1.1` alone
    /// by default. Offer `h2` only where the connection is then served by an HTTP/2 server
    /// that takes extended CONNECTs (`sockeye::hyper::http2_builder`, feature `hyper`) when the
    /// client picks it ([`tokio_rustls::server::TlsStream`]'s `get_ref().1.alpn_protocol()`
    /// tells): [`ServerBuilder::tls`](crate::ServerBuilder::tls)'s own accept speaks HTTP/1.1
    /// only. An empty list turns ALPN off.
    pub fn alpn_protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// Requires every client to present a certificate that chains to one in `pem`.
    ///
    /// # Errors
    /// `pem` holds no valid certificate, or one rustls refuses as a root.
    pub fn client_roots_pem(mut self, pem: &[u8]) -> Result<Self, TlsSetupError> {
        let roots = self.client_roots.get_or_insert_with(RootCertStore::empty);
        for cert in certificates(pem)? {
            roots.add(cert)?;
        }
        Ok(self)
    }

    /// With [`client_roots_pem`](Self::client_roots_pem): let clients without a certificate in
    /// too (a certificate, when presented, must still verify). Without client roots,
    /// [`build`](Self::build) refuses it.
    pub fn client_auth_optional(mut self, optional: bool) -> Self {
        self.client_auth_optional = optional;
        self
    }

    /// The acceptor.
    ///
    /// # Errors
    /// rustls refuses the key or the roots; optional client authentication without roots.
    pub fn build(self) -> Result<TlsAcceptor, TlsSetupError> {
        if self.client_auth_optional && self.client_roots.is_none() {
            return Err(TlsSetupError::NoRoots);
        }
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match self.client_roots {
            Some(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = if self.client_auth_optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(verifier.build()?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(self.identity.chain, self.identity.key)?;
        config.alpn_protocols = self.alpn;
        Ok(TlsAcceptor::from_rustls(Arc::new(config)))
    }
}

impl fmt::Debug for TlsAcceptorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptorBuilder")
            .field(
                "client_roots",
                &self.client_roots.as_ref().map(RootCertStore::len),
            )
            .field("client_auth_optional", &self.client_auth_optional)
            .field(
                "alpn",
                &self
                    .alpn
                    .iter()
                    .map(|p| String::from_utf8_lossy(p))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Why a TLS handshake (or a TLS record later) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The certificate does not chain to a trusted root.
    UnknownIssuer,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate is not for the host name (or address) connected to.
    WrongName,
    /// The certificate was revoked.
    Revoked,
    /// The certificate is invalid in another way (bad signature, bad encoding, wrong usage).
    BadCertificate,
    /// The client presented no certificate to a server that requires one.
    NoClientCertificate,
    /// The peer refused the handshake with this alert (it did not trust our certificate, say).
    PeerAlert(AlertDescription),
    /// The peer does not speak TLS on this port: what came back is not a TLS record (a plain
    /// HTTP answer, say).
    NotTls,
    /// Another TLS failure: no common protocol version or cipher suite, a corrupt record.
    Other,
}

/// A TLS failure: what went wrong, and the rustls error.
#[derive(Debug)]
pub struct TlsError {
    failure: TlsFailure,
    source: rustls::Error,
}

impl TlsError {
    /// Classifies an I/O error that carries a rustls error; `None` for other I/O errors.
    pub(crate) fn from_io(e: &io::Error) -> Option<Self> {
        let source = e.get_ref()?.downcast_ref::<rustls::Error>()?.clone();
        let failure = match &source {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsFailure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsFailure::NotYetValid
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::WrongName,
                CertificateError::Revoked => TlsFailure::Revoked,
                _ => TlsFailure::BadCertificate,
            },
            rustls::Error::NoCertificatesPresented => TlsFailure::NoClientCertificate,
            rustls::Error::AlertReceived(alert) => TlsFailure::PeerAlert(*alert),
            // The first bytes back are not a TLS record: an HTTP server's answer to what it
            // took for a request, typically.
            rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
                | rustls::InvalidMessage::UnknownProtocolVersion,
            ) => TlsFailure::NotTls,
            _ => TlsFailure::Other,
        };
        Some(Self { failure, source })
    }

    /// What went wrong.
    pub fn failure(&self) -> TlsFailure {
        self.failure
    }

    /// The rustls error.
    pub fn rustls_error(&self) -> &rustls::Error {
        &self.source
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.failure {
            TlsFailure::UnknownIssuer => "certificate issued by an unknown authority",
            TlsFailure::Expired => "certificate expired",
            TlsFailure::NotYetValid => "certificate not valid yet",
            TlsFailure::WrongName => "certificate not valid for this host name",
            TlsFailure::Revoked => "certificate revoked",
            TlsFailure::BadCertificate => "invalid certificate",
            TlsFailure::NoClientCertificate => "no client certificate presented",
            TlsFailure::PeerAlert(_) => "the peer refused the TLS handshake",
            TlsFailure::NotTls => "the peer does not speak TLS",
            // rustls says it best.
            TlsFailure::Other => return fmt::Display::fmt(&self.source, f),
        };
        write!(f, "{what} ({})", self.source)
    }
}

impl std::error::Error for TlsError {
    /// What the message does not already say: the rustls error's text is part of it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// Why a TLS handshake did not complete: the settings, the handshake itself, or the transport
/// under it.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsHandshakeError {
    /// The settings could not be used (a bad server name, the roots).
    Setup(TlsSetupError),
    /// The handshake failed: [`TlsError::failure`] says why.
    Tls(TlsError),
    /// The transport failed (or, for the blocking client, timed out) during the handshake.
    Io(io::Error),
}

impl TlsHandshakeError {
    /// An I/O error from a TLS stream: a TLS failure when it carries a rustls error.
    pub(crate) fn from_io(e: io::Error) -> Self {
        match TlsError::from_io(&e) {
            Some(tls) => Self::Tls(tls),
            None => Self::Io(e),
        }
    }
}

impl From<TlsSetupError> for TlsHandshakeError {
    fn from(e: TlsSetupError) -> Self {
        Self::Setup(e)
    }
}

impl fmt::Display for TlsHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setup(e) => write!(f, "invalid TLS settings: {e}"),
            Self::Tls(e) => write!(f, "TLS failed: {e}"),
            Self::Io(e) => write!(f, "I/O error during the TLS handshake: {e}"),
        }
    }
}

impl std::error::Error for TlsHandshakeError {
    /// What the message does not already say.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Setup(e) => e.source(),
            Self::Tls(e) => e.source(),
            Self::Io(e) => e.source(),
        }
    }
}

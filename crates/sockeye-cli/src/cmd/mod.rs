//! The subcommands.

pub(crate) mod bench;
pub(crate) mod connect;
pub(crate) mod forward;
pub(crate) mod serve;

/// A usage error found after parsing (a feature this build does not have, a bad header).
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

impl crate::args::NetArgs {
    /// Applies the TLS and proxy options to a client.
    pub(crate) fn apply(
        &self,
        builder: sockeye::ClientBuilder,
    ) -> Result<sockeye::ClientBuilder, Usage> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| Usage(format!("cannot read {}: {e}", path.display())))
        };
        let mut tls = sockeye::TlsConfig::new().native_roots(self.native_roots);
        for path in &self.ca_certs {
            tls = tls
                .add_root_pem(&read(path)?)
                .map_err(|e| Usage(format!("--cacert {}: {e}", path.display())))?;
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls
                .client_certificate_pem(&read(cert)?, &read(key)?)
                .map_err(|e| Usage(format!("--cert/--key: {e}")))?;
        }
        if self.insecure {
            tls = tls.dangerous_accept_any_certificate();
        }
        let builder = builder.tls(tls);
        Ok(match (&self.proxy, self.no_proxy) {
            // The URL may hold a password: the message names only what is wrong with it.
            (Some(url), _) => {
                builder.proxy(url.parse().map_err(|e| Usage(format!("--proxy: {e}")))?)
            }
            (None, true) => builder,
            (None, false) => builder.proxy_from_env(),
        })
    }
}

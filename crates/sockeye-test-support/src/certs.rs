//! Certificates made at test time with rcgen.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::TempDir;

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain (leaf, then the CA when there is one) and its key, in PEM.
pub struct Leaf {
    /// The leaf certificate followed by its issuer's.
    pub chain_pem: String,
    /// The leaf's private key.
    pub key_pem: String,
}

impl Ca {
    /// A new CA whose common name is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA's certificate in PEM, for a client's roots.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, mut params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.issuer.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for these names (DNS names or IP addresses), valid now.
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.sign(server_params(names))
    }

    /// A server certificate for these names that expired in 2021.
    pub fn expired_server(&self, names: &[&str]) -> Leaf {
        let mut params = server_params(names);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(params)
    }

    /// A client certificate whose common name is `name`.
    pub fn client(&self, name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }
}

impl Leaf {
    /// A self-signed certificate for these names, made as `openssl req -x509` makes one:
    /// marked as a CA (`basicConstraints CA:TRUE`), issued by no other CA. Its chain is the
    /// certificate alone, which no client trusts unless given exactly that certificate.
    pub fn self_signed(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The parameters of a server certificate for `names`.
fn server_params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

/// A CA and a server certificate for `localhost` and `127.0.0.1`, written as PEM files to a
/// directory removed when this is dropped: for programs that take file names. The paths are
/// strings, ready for a command line.
pub struct TlsFiles {
    /// The CA's certificate (`ca.pem`).
    pub ca_file: String,
    /// The server's chain, leaf then CA (`chain.pem`).
    pub chain_file: String,
    /// The server's private key (`key.pem`).
    pub key_file: String,
    _dir: TempDir,
}

impl TlsFiles {
    /// Makes the certificates and writes them to a new directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let ca = Ca::new(&format!("{tag} test ca"));
        let leaf = ca.server(&["localhost", "127.0.0.1"]);
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path.to_str()
                .expect("a UTF-8 temporary directory")
                .to_owned()
        };
        Self {
            ca_file: write("ca.pem", &ca.pem()),
            chain_file: write("chain.pem", &leaf.chain_pem),
            key_file: write("key.pem", &leaf.key_pem),
            _dir: dir,
        }
    }
}

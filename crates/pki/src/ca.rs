//! The development CA and the certificates it issues.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber, string::Ia5String,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fsutil::{self, CERT_MODE, KEY_MODE, Replace};
use crate::{operator_spiffe_id, service_spiffe_id, validate_operator_name, validate_service_name};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Validity of a generated CA certificate: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(3652 * 24 * 60 * 60);
/// Default validity of a leaf certificate: one year.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Certificates start to be valid this long before they are issued, to tolerate clock skew
/// between the machine that issues them and the machines that check them.
const BACKDATE: Duration = Duration::from_secs(60 * 60);
/// Organization name in every subject this crate issues.
const ORGANIZATION: &str = "caremesh";

/// A certificate authority that can issue mesh certificates: a CA certificate and its ECDSA
/// P-256 private key.
///
/// `Debug` shows the issuer's name, never the key.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // rcgen's `Issuer` prints its name and key usages and elides the key.
        f.debug_struct("CertificateAuthority")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generates a new self-signed CA with a fresh ECDSA P-256 key: basic constraints CA (path
    /// length 0: it issues leaf certificates only), key usages keyCertSign and cRLSign, valid for
    /// ten years (from one hour ago, to tolerate clock skew).
    pub fn generate(common_name: &str) -> Result<Self> {
        let key = generate_key("CA key")?;
        Self::self_signed(common_name, key)
    }

    /// A new self-signed CA certificate for an existing key.
    pub(crate) fn self_signed(common_name: &str, key: KeyPair) -> Result<Self> {
        let what = || format!("CA certificate {common_name:?}");
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now), &what)?;
        params.not_after = to_offset(now.checked_add(CA_VALIDITY).unwrap_or(now), &what)?;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(|source| Error::Generate { what: what(), source })?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from a PEM certificate and a PEM (PKCS#8, SEC1 or PKCS#1) private key.
    ///
    /// Fails if the certificate is not a CA certificate, is not currently valid, or the key does
    /// not belong to it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert_pem = fsutil::read_string(cert_path, "CA certificate")?;
        let key_pem = fsutil::read_secret(key_path, "CA key")?;
        let key = parse_key(&key_pem, key_path, "CA key")?;
        Self::from_parts(cert_pem, cert_path, key, key_path)
    }

    fn from_parts(cert_pem: String, cert_path: &Path, key: KeyPair, key_path: &Path) -> Result<Self> {
        const WHAT: &str = "CA certificate";
        let invalid = |reason: String| Error::Invalid {
            what: WHAT,
            path: cert_path.to_owned(),
            reason,
        };
        let cert_der = parse_cert_pem(&cert_pem, cert_path, WHAT)?;
        {
            let x509 = parse_x509(&cert_der, cert_path, WHAT)?;
            if !x509.is_ca() {
                return Err(invalid("not a CA certificate (basic constraints do not say CA)".into()));
            }
            check_currently_valid(&x509).map_err(invalid)?;
            if !key_matches(&x509, &key) {
                return Err(Error::Invalid {
                    what: "CA key",
                    path: key_path.to_owned(),
                    reason: format!("it does not belong to {}", cert_path.display()),
                });
            }
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER (e.g. for a rustls `RootCertStore`).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Writes the CA certificate (mode 0644) and key (mode 0600), each atomically, creating or
    /// replacing the files. The key is written first.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        self.write_files(cert_path, key_path, Replace::Allow)
    }

    /// Like [`write`](Self::write), but fails with [`Error::AlreadyExists`] instead of replacing
    /// an existing file.
    pub fn write_new(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        check_absent(cert_path, "CA certificate")?;
        self.write_files(cert_path, key_path, Replace::Never)
    }

    pub(crate) fn write_files(&self, cert_path: &Path, key_path: &Path, replace: Replace) -> Result<()> {
        let key_pem = Zeroizing::new(self.issuer.key().serialize_pem());
        fsutil::write_atomic(key_path, key_pem.as_bytes(), KEY_MODE, replace, "CA key")?;
        self.write_cert(cert_path, replace)
    }

    pub(crate) fn write_cert(&self, cert_path: &Path, replace: Replace) -> Result<()> {
        fsutil::write_atomic(
            cert_path,
            self.cert_pem.as_bytes(),
            CERT_MODE,
            replace,
            "CA certificate",
        )
    }

    /// Issues a certificate for a mesh service, with a fresh ECDSA P-256 key, valid for one year:
    ///
    /// - DNS SANs: `service`, `localhost`, then each of `extra_names` (an entry that parses as an
    ///   IP address becomes an IP SAN instead);
    /// - IP SANs: `127.0.0.1`, `::1`;
    /// - URI SAN: `spiffe://caremesh.local/svc/<service>`;
    /// - extended key usages serverAuth and clientAuth (services call each other).
    ///
    /// `service` must pass [`validate_service_name`](crate::validate_service_name).
    pub fn issue_service(&self, service: &str, extra_names: &[String]) -> Result<IssuedCert> {
        self.issue(&service_spec(service, extra_names)?)
    }

    /// Issues an operator client certificate (for grpcurl and `caremesh` admin commands): URI SAN
    /// `spiffe://caremesh.local/operator/<name>`, extended key usage clientAuth only, one year.
    ///
    /// `name` must pass [`validate_operator_name`](crate::validate_operator_name).
    pub fn issue_operator(&self, name: &str) -> Result<IssuedCert> {
        self.issue(&operator_spec(name)?)
    }

    /// Issues a client certificate with an arbitrary URI SAN (normally a SPIFFE id such as
    /// `spiffe://caremesh.local/svc/records-svc` or one from a foreign trust domain), extended key
    /// usage clientAuth only, one year. Meant for tests that need a particular client identity.
    pub fn issue_client(&self, uri: &str) -> Result<IssuedCert> {
        let mut spec = LeafSpec::new(uri);
        spec.uris = vec![uri.to_owned()];
        spec.client_auth = true;
        self.issue(&spec)
    }

    /// Issues a leaf certificate described by `spec`, with a fresh ECDSA P-256 key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert> {
        let key = generate_key(&format!("key for {:?}", spec.common_name))?;
        self.issue_for_key(spec, key)
    }

    /// Issues a leaf certificate described by `spec` for an existing key.
    pub(crate) fn issue_for_key(&self, spec: &LeafSpec, key: KeyPair) -> Result<IssuedCert> {
        let params = spec.to_params()?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|source| Error::Generate {
            what: format!("certificate for {:?}", spec.common_name),
            source,
        })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: PrivateKeyPem(Zeroizing::new(key.serialize_pem())),
            key_der: Zeroizing::new(key.serialize_der()),
        })
    }

    /// Checks that `x509` was signed by this CA.
    pub(crate) fn verify_issued(&self, x509: &X509Certificate<'_>) -> std::result::Result<(), String> {
        let (_, ca) = x509_parser::parse_x509_certificate(&self.cert_der)
            .map_err(|e| format!("cannot parse the CA certificate: {e}"))?;
        x509.verify_signature(Some(ca.public_key()))
            .map_err(|_| "it was not issued by this CA (signature does not verify)".to_owned())
    }
}

/// What a leaf certificate should contain; see [`CertificateAuthority::issue`].
///
/// [`LeafSpec::new`] starts with no SANs, no extended key usages and the default validity (one
/// year from one hour ago). Every leaf is an end entity (basic constraints CA false) with key
/// usage digitalSignature and an authority key identifier, as X509-SVIDs require.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs (a SPIFFE X509-SVID has exactly one).
    pub uris: Vec<String>,
    /// Extended key usage serverAuth.
    pub server_auth: bool,
    /// Extended key usage clientAuth.
    pub client_auth: bool,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity (set it in the past to get an expired certificate for a test).
    pub not_after: SystemTime,
}

impl LeafSpec {
    /// A spec with the given common name, no SANs, no extended key usages, valid for one year.
    pub fn new(common_name: impl Into<String>) -> Self {
        let now = SystemTime::now();
        Self {
            common_name: common_name.into(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
            server_auth: false,
            client_auth: false,
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after: now.checked_add(LEAF_VALIDITY).unwrap_or(now),
        }
    }

    /// Sets the validity to `days` days from now (starting one hour ago, like the default).
    pub fn valid_for_days(mut self, days: u32) -> Self {
        let now = SystemTime::now();
        self.not_before = now.checked_sub(BACKDATE).unwrap_or(now);
        self.not_after = DAY.checked_mul(days).and_then(|d| now.checked_add(d)).unwrap_or(now);
        self
    }

    fn to_params(&self) -> Result<CertificateParams> {
        let what = || format!("certificate for {:?}", self.common_name);
        let ia5 = |s: &str| Ia5String::try_from(s).map_err(|source| Error::Generate { what: what(), source });
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&self.common_name);
        params.subject_alt_names = Vec::new();
        for dns in &self.dns_names {
            params.subject_alt_names.push(SanType::DnsName(ia5(dns)?));
        }
        for ip in &self.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in &self.uris {
            params.subject_alt_names.push(SanType::URI(ia5(uri)?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if self.server_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.client_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(self.not_before, &what)?;
        params.not_after = to_offset(self.not_after, &what)?;
        params.serial_number = Some(random_serial()?);
        Ok(params)
    }
}

/// The spec of a service certificate; see [`CertificateAuthority::issue_service`].
pub(crate) fn service_spec(service: &str, extra_names: &[String]) -> Result<LeafSpec> {
    validate_service_name(service)?;
    let mut spec = LeafSpec::new(service);
    spec.dns_names = vec![service.to_owned(), "localhost".to_owned()];
    spec.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
    add_names(&mut spec, extra_names);
    spec.uris = vec![service_spiffe_id(service)];
    spec.server_auth = true;
    spec.client_auth = true;
    Ok(spec)
}

/// Adds `names` to `spec`'s SANs: IP addresses as IP SANs, the rest as DNS names, each once.
fn add_names(spec: &mut LeafSpec, names: &[String]) {
    for name in names {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) if !spec.ip_addresses.contains(&ip) => spec.ip_addresses.push(ip),
            Ok(_) => {}
            Err(_) if !spec.dns_names.iter().any(|d| d == name) => spec.dns_names.push(name.to_owned()),
            Err(_) => {}
        }
    }
}

/// The spec of the web origin's certificate; see [`crate::init_web`]: DNS SAN `localhost` and IP
/// SANs `127.0.0.1`, `::1`, then `extra_names` (IPs become IP SANs); serverAuth for browsers,
/// clientAuth with the URI SAN [`crate::web_origin_spiffe_id`] towards the services, which allow
/// it no internal RPC and believe only the browser address it forwards.
pub(crate) fn web_spec(extra_names: &[String]) -> LeafSpec {
    let mut spec = LeafSpec::new("caremesh web origin");
    spec.dns_names = vec!["localhost".to_owned()];
    spec.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
    add_names(&mut spec, extra_names);
    spec.uris = vec![crate::web_origin_spiffe_id()];
    spec.server_auth = true;
    spec.client_auth = true;
    spec
}

/// The spec of an operator certificate; see [`CertificateAuthority::issue_operator`].
pub(crate) fn operator_spec(name: &str) -> Result<LeafSpec> {
    validate_operator_name(name)?;
    let mut spec = LeafSpec::new(name);
    spec.uris = vec![operator_spiffe_id(name)];
    spec.client_auth = true;
    Ok(spec)
}

/// A private key in PEM (PKCS#8). The buffer is wiped when dropped and `Debug` does not show it.
#[derive(Clone)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// The PEM text. Handle with care: this is the secret.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem([redacted])")
    }
}

/// A certificate issued by a [`CertificateAuthority`], with its private key.
///
/// The key's buffers are wiped when dropped; `Debug` shows the certificate only.
pub struct IssuedCert {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: PrivateKeyPem,
    key_der: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl IssuedCert {
    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &PrivateKeyPem {
        &self.key_pem
    }

    /// The private key, DER (PKCS#8), e.g. for a rustls config.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.to_vec()))
    }

    /// Writes the certificate (mode 0644) and key (mode 0600), each atomically (temporary file in
    /// the same directory, synced, renamed), creating or replacing the files. The key is written
    /// first, so a process reloading the pair may briefly see the new key with the old
    /// certificate and should retry on a mismatch.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        self.write_files(cert_path, key_path, Replace::Allow)
    }

    /// Like [`write`](Self::write), but fails with [`Error::AlreadyExists`] instead of replacing
    /// an existing file.
    pub fn write_new(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        check_absent(cert_path, "certificate")?;
        self.write_files(cert_path, key_path, Replace::Never)
    }

    pub(crate) fn write_files(&self, cert_path: &Path, key_path: &Path, replace: Replace) -> Result<()> {
        fsutil::write_atomic(
            key_path,
            self.key_pem.as_str().as_bytes(),
            KEY_MODE,
            replace,
            "private key",
        )?;
        self.write_cert(cert_path, replace)
    }

    pub(crate) fn write_cert(&self, cert_path: &Path, replace: Replace) -> Result<()> {
        fsutil::write_atomic(cert_path, self.cert_pem.as_bytes(), CERT_MODE, replace, "certificate")
    }
}

fn check_absent(path: &Path, what: &'static str) -> Result<()> {
    if fsutil::exists(path, what)? {
        return Err(Error::AlreadyExists {
            what,
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn generate_key(what: &str) -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| Error::Generate {
        what: what.to_owned(),
        source,
    })
}

/// A random positive 128-bit serial number (RFC 5280 §4.1.2.2: at most 20 octets, positive).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random { reason: e.to_string() })?;
    if let Some(first) = bytes.first_mut() {
        // Positive, and no leading zero octet, so the DER encoding is exactly 16 octets.
        *first = (*first & 0x3f) | 0x40;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

fn to_offset(t: SystemTime, what: &impl Fn() -> String) -> Result<OffsetDateTime> {
    let secs = t.duration_since(UNIX_EPOCH).map_err(|_| Error::Validity {
        what: what(),
        reason: "a date before 1970",
    })?;
    i64::try_from(secs.as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| Error::Validity {
            what: what(),
            reason: "a date too far in the future",
        })
}

/// Parses a private key PEM. The error reason is fixed text: it never quotes the file.
pub(crate) fn parse_key(pem: &str, path: &Path, what: &'static str) -> Result<KeyPair> {
    KeyPair::from_pem(pem).map_err(|e| {
        let reason = match e {
            rcgen::Error::UnsupportedSignatureAlgorithm => {
                "unsupported key algorithm (expected ECDSA P-256, P-384 or Ed25519)"
            }
            rcgen::Error::RingKeyRejected(_) => "the key was rejected as malformed",
            _ => "not a PEM-encoded private key",
        };
        Error::Invalid {
            what,
            path: path.to_owned(),
            reason: reason.to_owned(),
        }
    })
}

/// Parses the first certificate of a PEM file.
pub(crate) fn parse_cert_pem(pem: &str, path: &Path, what: &'static str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Invalid {
        what,
        path: path.to_owned(),
        reason: format!("not a PEM certificate: {e}"),
    })
}

pub(crate) fn parse_x509<'a>(
    der: &'a CertificateDer<'_>,
    path: &Path,
    what: &'static str,
) -> Result<X509Certificate<'a>> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, x509)| x509)
        .map_err(|e| Error::Invalid {
            what,
            path: path.to_owned(),
            reason: format!("not an X.509 certificate: {e}"),
        })
}

/// Whether `key` is the private half of the certificate's public key.
pub(crate) fn key_matches(x509: &X509Certificate<'_>, key: &KeyPair) -> bool {
    x509.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

pub(crate) fn check_currently_valid(x509: &X509Certificate<'_>) -> std::result::Result<(), String> {
    let validity = x509.validity();
    if validity.is_valid() {
        Ok(())
    } else {
        Err(format!(
            "it is expired or not yet valid (valid from {} to {})",
            validity.not_before, validity.not_after
        ))
    }
}

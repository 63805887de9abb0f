//! `init`: make sure a PKI directory holds a CA and every requested certificate.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use x509_parser::extensions::GeneralName;

use crate::ca::{
    CertificateAuthority, LeafSpec, check_currently_valid, key_matches, operator_spec, parse_cert_pem, parse_key,
    parse_x509, service_spec, web_spec,
};
use crate::error::{Error, Result};
use crate::fsutil::{self, Replace};
use crate::layout::PkiLayout;
use crate::{DEV_CA_COMMON_NAME, validate_operator_name, validate_service_name};

const REISSUE_HINT: &str = "delete it and its key, then run again to have them reissued";

/// What [`init`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InitReport {
    /// The PKI directory.
    pub dir: PathBuf,
    /// Files written by this run, in the order they were written.
    pub created: Vec<PathBuf>,
    /// Files that were already there, checked and kept as they were.
    pub existing: Vec<PathBuf>,
}

impl InitReport {
    /// Whether this run wrote anything.
    pub fn created_anything(&self) -> bool {
        !self.created.is_empty()
    }
}

/// Makes sure `dir` holds a CA and a certificate and key for each service and operator, using
/// the file names of [`PkiLayout`]. Idempotent, so `caremesh up` can call it at every start:
///
/// - creates `dir` (and missing parents) with mode 0700 if it does not exist; an existing
///   directory keeps its mode;
/// - reuses the CA if `ca.crt` and `ca.key` exist, otherwise generates one
///   ([`DEV_CA_COMMON_NAME`]);
/// - issues each missing service certificate ([`CertificateAuthority::issue_service`] with
///   `extra_dns`) and operator certificate ([`CertificateAuthority::issue_operator`]);
/// - never overwrites a file. Keys are written with mode 0600 and every file atomically (temporary
///   file, sync, rename), key before certificate. If a run was interrupted between the two, the
///   next run issues the certificate for the key already on disk; a certificate without its key
///   is an error ([`Error::IncompletePair`]).
///
/// Existing files are checked, not trusted: a certificate that was not issued by the CA, is
/// expired, has another identity or lacks one of the requested DNS names, or whose key does not
/// match, is an error naming the file (delete it to have it reissued).
pub fn init(dir: &Path, services: &[&str], operators: &[&str], extra_dns: &[String]) -> Result<InitReport> {
    // Validate every name before touching the disk.
    let services = dedup(services);
    let operators = dedup(operators);
    for service in &services {
        validate_service_name(service)?;
    }
    for operator in &operators {
        validate_operator_name(operator)?;
    }

    fsutil::create_private_dir(dir)?;
    let layout = PkiLayout::new(dir);
    let mut report = InitReport {
        dir: dir.to_owned(),
        ..InitReport::default()
    };

    let ca = ensure_ca(&layout, &mut report)?;
    for service in services {
        let spec = service_spec(service, extra_dns)?;
        let (cert, key) = (layout.service_cert(service), layout.service_key(service));
        ensure_leaf(&ca, &spec, &cert, &key, &mut report)?;
    }
    for operator in operators {
        let spec = operator_spec(operator)?;
        let (cert, key) = (layout.operator_cert(operator), layout.operator_key(operator));
        ensure_leaf(&ca, &spec, &cert, &key, &mut report)?;
    }
    Ok(report)
}

/// Makes sure `dir` holds the web origin's HTTPS certificate and key (`web.crt`, `web.key`,
/// [`PkiLayout::web_cert`]), issued by the CA in `dir` (created if missing, like [`init`]):
/// DNS SAN `localhost` plus `extra_dns`, IP SANs `127.0.0.1` and `::1`, serverAuth and clientAuth
/// with the SPIFFE id [`crate::web_origin_spiffe_id`]. Existing files are checked and kept, as in
/// [`init`], except that a web certificate that no longer matches is reissued; the report lists
/// only the web files.
pub fn init_web(dir: &Path, extra_dns: &[String]) -> Result<InitReport> {
    fsutil::create_private_dir(dir)?;
    let layout = PkiLayout::new(dir);
    let mut ca_report = InitReport::default();
    let ca = ensure_ca(&layout, &mut ca_report)?;
    let mut report = InitReport {
        dir: dir.to_owned(),
        created: ca_report.created,
        existing: Vec::new(),
    };
    let spec = web_spec(extra_dns);
    match ensure_leaf(&ca, &spec, &layout.web_cert(), &layout.web_key(), &mut report) {
        // The web certificate is a leaf of this CA that browsers trust by the CA: one that no
        // longer matches its spec (an older layout, a new name, expired) is reissued in place
        // with a fresh key rather than stopping the mesh.
        Err(Error::Invalid { .. }) => {
            let issued = ca.issue(&spec)?;
            issued.write_files(&layout.web_cert(), &layout.web_key(), Replace::Allow)?;
            report.existing.clear();
            report.created = vec![layout.web_key(), layout.web_cert()];
        }
        result => result?,
    }
    Ok(report)
}

fn dedup<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    names.iter().copied().filter(|n| seen.insert(*n)).collect()
}

fn ensure_ca(layout: &PkiLayout, report: &mut InitReport) -> Result<CertificateAuthority> {
    let (cert, key) = (layout.ca_cert(), layout.ca_key());
    let has_cert = fsutil::exists(&cert, "CA certificate")?;
    let has_key = fsutil::exists(&key, "CA key")?;
    match (has_cert, has_key) {
        (true, true) => {
            let ca = CertificateAuthority::load(&cert, &key)?;
            report.existing.extend([cert, key]);
            Ok(ca)
        }
        (false, false) => {
            let ca = CertificateAuthority::generate(DEV_CA_COMMON_NAME)?;
            ca.write_files(&cert, &key, Replace::Never)?;
            report.created.extend([key, cert]);
            Ok(ca)
        }
        (false, true) => {
            // An earlier run stopped after writing the key: certify that key. Certificates issued
            // under an earlier CA certificate for the same key and name still verify.
            let key_pem = fsutil::read_secret(&key, "CA key")?;
            let key_pair = parse_key(&key_pem, &key, "CA key")?;
            let ca = CertificateAuthority::self_signed(DEV_CA_COMMON_NAME, key_pair)?;
            ca.write_cert(&cert, Replace::Never)?;
            report.existing.push(key);
            report.created.push(cert);
            Ok(ca)
        }
        (true, false) => Err(Error::IncompletePair {
            present: cert,
            missing: key,
        }),
    }
}

fn ensure_leaf(
    ca: &CertificateAuthority,
    spec: &LeafSpec,
    cert: &Path,
    key: &Path,
    report: &mut InitReport,
) -> Result<()> {
    let has_cert = fsutil::exists(cert, "certificate")?;
    let has_key = fsutil::exists(key, "private key")?;
    match (has_cert, has_key) {
        (true, true) => {
            check_existing_leaf(ca, spec, cert, key)?;
            report.existing.extend([cert.to_owned(), key.to_owned()]);
        }
        (false, false) => {
            let issued = ca.issue(spec)?;
            issued.write_files(cert, key, Replace::Never)?;
            report.created.extend([key.to_owned(), cert.to_owned()]);
        }
        (false, true) => {
            // An earlier run stopped after writing the key: certify that key.
            let key_pem = fsutil::read_secret(key, "private key")?;
            let key_pair = parse_key(&key_pem, key, "private key")?;
            let issued = ca.issue_for_key(spec, key_pair)?;
            issued.write_cert(cert, Replace::Never)?;
            report.existing.push(key.to_owned());
            report.created.push(cert.to_owned());
        }
        (true, false) => {
            return Err(Error::IncompletePair {
                present: cert.to_owned(),
                missing: key.to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks that an existing certificate and key are what `spec` asks for and chain to `ca`.
fn check_existing_leaf(ca: &CertificateAuthority, spec: &LeafSpec, cert_path: &Path, key_path: &Path) -> Result<()> {
    const WHAT: &str = "certificate";
    let invalid = |reason: String| Error::Invalid {
        what: WHAT,
        path: cert_path.to_owned(),
        reason: format!("{reason}; {REISSUE_HINT}"),
    };
    let cert_pem = fsutil::read_string(cert_path, WHAT)?;
    let der = parse_cert_pem(&cert_pem, cert_path, WHAT)?;
    let x509 = parse_x509(&der, cert_path, WHAT)?;

    ca.verify_issued(&x509).map_err(invalid)?;
    check_currently_valid(&x509).map_err(invalid)?;

    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let mut uris = Vec::new();
    let san = x509
        .subject_alternative_name()
        .map_err(|e| invalid(format!("unreadable subject alternative names: {e}")))?;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(d) => dns.push(*d),
            GeneralName::URI(u) => uris.push(*u),
            GeneralName::IPAddress(bytes) => ips.extend(ip_from_bytes(bytes)),
            _ => {}
        }
    }
    if uris != spec.uris.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(invalid(format!("its URI SANs are {uris:?}, expected {:?}", spec.uris)));
    }
    let missing_dns: Vec<&str> = spec
        .dns_names
        .iter()
        .map(String::as_str)
        .filter(|d| !dns.iter().any(|have| have.eq_ignore_ascii_case(d)))
        .collect();
    if !missing_dns.is_empty() {
        return Err(invalid(format!("it lacks the DNS SAN(s) {missing_dns:?}")));
    }
    let missing_ips: Vec<IpAddr> = spec
        .ip_addresses
        .iter()
        .copied()
        .filter(|ip| !ips.contains(ip))
        .collect();
    if !missing_ips.is_empty() {
        return Err(invalid(format!("it lacks the IP SAN(s) {missing_ips:?}")));
    }
    let eku = x509
        .extended_key_usage()
        .map_err(|e| invalid(format!("unreadable extended key usage: {e}")))?
        .map(|ext| ext.value);
    let (server, client) = eku.map_or((false, false), |e| (e.server_auth, e.client_auth));
    if (spec.server_auth && !server) || (spec.client_auth && !client) {
        return Err(invalid("it lacks a required extended key usage".into()));
    }

    let key_pem = fsutil::read_secret(key_path, "private key")?;
    let key = parse_key(&key_pem, key_path, "private key")?;
    if !key_matches(&x509, &key) {
        return Err(Error::Invalid {
            what: "private key",
            path: key_path.to_owned(),
            reason: format!("it does not belong to {}; {REISSUE_HINT}", cert_path.display()),
        });
    }
    Ok(())
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Some(IpAddr::from(v6))
    } else {
        None
    }
}

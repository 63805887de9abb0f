//! Tests of the development PKI: idempotent `init`, certificate contents (parsed with
//! x509-parser), chaining to the CA, file modes, and acceptance by rustls' webpki verifiers.

// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use caremesh_pki::{
    CertificateAuthority, Error, LeafSpec, PkiLayout, init, init_web, operator_spiffe_id, service_spiffe_id,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

const SERVICES: &[&str] = &[
    "auth-svc",
    "messaging-svc",
    "abe-authority-svc",
    "records-svc",
    "audit-svc",
];

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    pem.contents
}

#[derive(Debug, Default)]
struct Sans {
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    uris: Vec<String>,
}

fn sans(cert: &X509Certificate<'_>) -> Sans {
    let mut out = Sans::default();
    let ext = cert.subject_alternative_name().unwrap().unwrap();
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(d) => out.dns.push((*d).to_owned()),
            GeneralName::URI(u) => out.uris.push((*u).to_owned()),
            GeneralName::IPAddress(b) => out.ips.push(match b.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                16 => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
                n => panic!("IP SAN of {n} bytes"),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    out
}

/// (serverAuth, clientAuth, any other EKU)
fn ekus(cert: &X509Certificate<'_>) -> (bool, bool, bool) {
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    let others = eku.any
        || eku.code_signing
        || eku.email_protection
        || eku.time_stamping
        || eku.ocsp_signing
        || !eku.other.is_empty();
    (eku.server_auth, eku.client_auth, others)
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateAuthority) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    Arc::new(roots)
}

#[test]
fn init_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");

    let first = init(&dir, SERVICES, &["admin"], &[]).unwrap();
    assert!(first.created_anything());
    assert!(first.existing.is_empty());
    // CA + 5 services + 1 operator, two files each.
    assert_eq!(first.created.len(), 14);
    let layout = PkiLayout::new(&dir);
    for path in [layout.ca_cert(), layout.ca_key()]
        .into_iter()
        .chain(
            SERVICES
                .iter()
                .flat_map(|s| [layout.service_cert(s), layout.service_key(s)]),
        )
        .chain([layout.operator_cert("admin"), layout.operator_key("admin")])
    {
        assert!(path.is_file(), "{} missing", path.display());
        assert!(first.created.contains(&path));
    }
    let before = snapshot(&dir);
    assert_eq!(before.len(), 14, "no stray temporary files: {:?}", before.keys());

    let second = init(&dir, SERVICES, &["admin"], &[]).unwrap();
    assert!(!second.created_anything(), "{second:?}");
    assert_eq!(second.existing.len(), 14);
    assert_eq!(snapshot(&dir), before, "files must be byte-identical");

    // Adding a service later issues only that one, under the same CA.
    let third = init(&dir, &["auth-svc", "extra-svc"], &[], &[]).unwrap();
    assert_eq!(
        third.created,
        vec![layout.service_key("extra-svc"), layout.service_cert("extra-svc")]
    );
    let ca = CertificateAuthority::load(&layout.ca_cert(), &layout.ca_key()).unwrap();
    let ca_x509 = parse(ca.cert_der());
    let extra = pem_to_der(&fs::read_to_string(layout.service_cert("extra-svc")).unwrap());
    parse(&extra).verify_signature(Some(ca_x509.public_key())).unwrap();
}

#[test]
fn service_certificate_contents_and_chain() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let issued = ca
        .issue_service(
            "records-svc",
            &[
                "records.hospital.example".to_owned(),
                "10.1.2.3".to_owned(),
                "localhost".to_owned(),
            ],
        )
        .unwrap();
    let cert = parse(issued.cert_der());
    assert_eq!(issued.cert_der().as_ref(), pem_to_der(issued.cert_pem()));

    let sans = sans(&cert);
    assert_eq!(sans.uris, vec!["spiffe://caremesh.local/svc/records-svc"]);
    assert_eq!(sans.uris, vec![service_spiffe_id("records-svc")]);
    assert_eq!(sans.dns, vec!["records-svc", "localhost", "records.hospital.example"]);
    assert_eq!(
        sans.ips,
        vec![
            "127.0.0.1".parse::<IpAddr>().unwrap(),
            "::1".parse().unwrap(),
            "10.1.2.3".parse().unwrap(),
        ]
    );
    assert_eq!(ekus(&cert), (true, true, false));
    assert!(!cert.is_ca());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());

    // About one year of validity.
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!((365 * 86400..=366 * 86400).contains(&lifetime), "{lifetime}");
    assert!(cert.validity().is_valid());

    // Chains to the CA, and only to it.
    let ca_x509 = parse(ca.cert_der());
    assert_eq!(cert.issuer(), ca_x509.subject());
    cert.verify_signature(Some(ca_x509.public_key())).unwrap();
    let other = CertificateAuthority::generate("other CA").unwrap();
    let other_x509 = parse(other.cert_der());
    assert!(cert.verify_signature(Some(other_x509.public_key())).is_err());

    // Each issuance has a fresh key and serial.
    let again = ca.issue_service("records-svc", &[]).unwrap();
    let again_x509 = parse(again.cert_der());
    assert_ne!(again_x509.public_key().raw, cert.public_key().raw);
    assert_ne!(again_x509.raw_serial(), cert.raw_serial());
    assert_ne!(again.key_pem().as_str(), issued.key_pem().as_str());
}

#[test]
fn ca_certificate_contents() {
    let ca = CertificateAuthority::generate("caremesh test CA").unwrap();
    let cert = parse(ca.cert_der());
    assert!(cert.is_ca());
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    cert.verify_signature(None).unwrap();
    assert_eq!(cert.subject(), cert.issuer());
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "caremesh test CA");
    let years = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / (365 * 86400);
    assert_eq!(years, 10);
    // ECDSA P-256 (id-ecPublicKey with prime256v1).
    assert_eq!(
        cert.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1"
    );
}

#[test]
fn operator_certificate() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let issued = ca.issue_operator("alice").unwrap();
    let cert = parse(issued.cert_der());
    let sans = sans(&cert);
    assert_eq!(sans.uris, vec!["spiffe://caremesh.local/operator/alice"]);
    assert_eq!(sans.uris, vec![operator_spiffe_id("alice")]);
    assert!(sans.dns.is_empty() && sans.ips.is_empty());
    assert_eq!(ekus(&cert), (false, true, false), "clientAuth only");
    cert.verify_signature(Some(parse(ca.cert_der()).public_key())).unwrap();
}

#[test]
fn arbitrary_client_identity() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let issued = ca.issue_client("spiffe://evil.example/svc/auth-svc").unwrap();
    let cert = parse(issued.cert_der());
    assert_eq!(sans(&cert).uris, vec!["spiffe://evil.example/svc/auth-svc"]);
    assert_eq!(ekus(&cert), (false, true, false));

    // A short-lived certificate: two days, starting one hour ago.
    let mut spec = LeafSpec::new("short").valid_for_days(2);
    spec.client_auth = true;
    let short = parse(ca.issue(&spec).unwrap().cert_der()).validity().clone();
    let lifetime = short.not_after.timestamp() - short.not_before.timestamp();
    assert_eq!(lifetime, 2 * 86400 + 3600);
}

#[cfg(unix)]
#[test]
fn file_modes() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data").join("pki");
    let report = init(&dir, &["auth-svc"], &["admin"], &[]).unwrap();
    assert_eq!(mode(&dir), 0o700);
    for path in &report.created {
        let name = path.file_name().unwrap().to_str().unwrap();
        if name.ends_with(".key") {
            assert_eq!(mode(path), 0o600, "{name}");
        } else {
            assert!(name.ends_with(".crt"));
            assert_eq!(mode(path), 0o644, "{name}");
        }
    }

    // `IssuedCert::write` applies the same modes.
    let ca = CertificateAuthority::load(&PkiLayout::new(&dir).ca_cert(), &PkiLayout::new(&dir).ca_key()).unwrap();
    let issued = ca.issue_operator("bob").unwrap();
    let (crt, key) = (tmp.path().join("bob.crt"), tmp.path().join("bob.key"));
    issued.write(&crt, &key).unwrap();
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&crt), 0o644);
}

#[test]
fn webpki_accepts_issued_certificates() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let roots = roots(&ca);
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .unwrap();
    let servers = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .unwrap();
    let now = UnixTime::now();

    let operator = ca.issue_operator("admin").unwrap();
    clients.verify_client_cert(operator.cert_der(), &[], now).unwrap();

    let service = ca.issue_service("audit-svc", &["audit.example".to_owned()]).unwrap();
    clients.verify_client_cert(service.cert_der(), &[], now).unwrap();
    for name in ["audit-svc", "localhost", "audit.example", "127.0.0.1", "::1"] {
        let name = ServerName::try_from(name).unwrap();
        servers
            .verify_server_cert(service.cert_der(), &[], &name, &[], now)
            .unwrap();
    }
    let wrong = ServerName::try_from("records-svc").unwrap();
    assert!(
        servers
            .verify_server_cert(service.cert_der(), &[], &wrong, &[], now)
            .is_err()
    );

    // An operator certificate is not a server certificate.
    let localhost = ServerName::try_from("localhost").unwrap();
    assert!(
        servers
            .verify_server_cert(operator.cert_der(), &[], &localhost, &[], now)
            .is_err()
    );

    // A certificate from another CA is refused.
    let other = CertificateAuthority::generate("other CA").unwrap();
    let foreign = other.issue_operator("admin").unwrap();
    assert!(clients.verify_client_cert(foreign.cert_der(), &[], now).is_err());

    // An expired certificate is refused.
    let mut spec = LeafSpec::new("expired");
    spec.uris = vec![operator_spiffe_id("old")];
    spec.client_auth = true;
    spec.not_before = SystemTime::now() - Duration::from_secs(3 * 86400);
    spec.not_after = SystemTime::now() - Duration::from_secs(86400);
    let expired = ca.issue(&spec).unwrap();
    assert!(clients.verify_client_cert(expired.cert_der(), &[], now).is_err());
}

#[test]
fn rustls_accepts_the_key_pair() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let service = ca.issue_service("auth-svc", &[]).unwrap();
    let roots = roots(&ca);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .unwrap();
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![service.cert_der().clone()], service.private_key_der())
        .unwrap();
}

#[test]
fn load_round_trip_and_errors_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = PkiLayout::new(tmp.path());
    let ca = CertificateAuthority::generate("test CA").unwrap();
    ca.write_new(&layout.ca_cert(), &layout.ca_key()).unwrap();
    let loaded = CertificateAuthority::load(&layout.ca_cert(), &layout.ca_key()).unwrap();
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    let issued = loaded.issue_operator("alice").unwrap();
    parse(issued.cert_der())
        .verify_signature(Some(parse(ca.cert_der()).public_key()))
        .unwrap();

    // write_new never overwrites.
    let err = ca.write_new(&layout.ca_cert(), &layout.ca_key()).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    // Missing key file.
    let missing = tmp.path().join("nope.key");
    let err = CertificateAuthority::load(&layout.ca_cert(), &missing).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read CA key {}: ", missing.display())),
        "{err}"
    );

    // A key that does not belong to the certificate.
    let other = CertificateAuthority::generate("other CA").unwrap();
    let other_key = tmp.path().join("other.key");
    other.write(&tmp.path().join("other.crt"), &other_key).unwrap();
    let err = CertificateAuthority::load(&layout.ca_cert(), &other_key).unwrap_err();
    assert!(err.to_string().contains("does not belong to"), "{err}");

    // A leaf certificate is not a CA.
    let leaf_crt = tmp.path().join("alice.crt");
    let leaf_key = tmp.path().join("alice.key");
    issued.write(&leaf_crt, &leaf_key).unwrap();
    let err = CertificateAuthority::load(&leaf_crt, &leaf_key).unwrap_err();
    assert!(err.to_string().contains("not a CA certificate"), "{err}");

    // Garbage in the key file: the message names the file, not its contents.
    let bad_key = tmp.path().join("bad.key");
    fs::write(&bad_key, "-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n").unwrap();
    let err = CertificateAuthority::load(&layout.ca_cert(), &bad_key).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&bad_key.display().to_string()), "{msg}");
    assert!(!msg.contains("SECRETSTUFF") && !format!("{err:?}").contains("SECRETSTUFF"));
}

#[test]
fn debug_output_never_shows_keys() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let issued = ca.issue_operator("alice").unwrap();
    let key_body: String = issued
        .key_pem()
        .as_str()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!key_body.is_empty());
    for debug in [
        format!("{issued:?}"),
        format!("{:?}", issued.key_pem()),
        format!("{ca:?}"),
    ] {
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(!debug.contains(&key_body[..40]), "{debug}");
    }
    assert!(issued.key_pem().as_str().contains("BEGIN PRIVATE KEY"));
}

#[test]
fn write_replaces_and_write_new_refuses() {
    let ca = CertificateAuthority::generate("test CA").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (crt, key) = (tmp.path().join("a.crt"), tmp.path().join("a.key"));
    let first = ca.issue_operator("a").unwrap();
    first.write_new(&crt, &key).unwrap();
    let second = ca.issue_operator("a").unwrap();
    let err = second.write_new(&crt, &key).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(fs::read_to_string(&crt).unwrap(), first.cert_pem());
    assert_eq!(fs::read_to_string(&key).unwrap(), first.key_pem().as_str());
    second.write(&crt, &key).unwrap();
    assert_eq!(fs::read_to_string(&crt).unwrap(), second.cert_pem());
    assert_eq!(fs::read_to_string(&key).unwrap(), second.key_pem().as_str());
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2, "no temp files left");
}

#[test]
fn init_completes_an_interrupted_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layout = PkiLayout::new(dir);
    init(dir, &["auth-svc"], &[], &[]).unwrap();
    let key_before = fs::read(layout.service_key("auth-svc")).unwrap();

    // Key written, certificate not (crash between the two renames).
    fs::remove_file(layout.service_cert("auth-svc")).unwrap();
    let report = init(dir, &["auth-svc"], &[], &[]).unwrap();
    assert_eq!(report.created, vec![layout.service_cert("auth-svc")]);
    assert_eq!(fs::read(layout.service_key("auth-svc")).unwrap(), key_before);
    // The new certificate matches the kept key (the next run checks it).
    let again = init(dir, &["auth-svc"], &[], &[]).unwrap();
    assert!(!again.created_anything());

    // Same for the CA: the old service certificate still chains to the recertified key.
    fs::remove_file(layout.ca_cert()).unwrap();
    let report = init(dir, &["auth-svc"], &[], &[]).unwrap();
    assert_eq!(report.created, vec![layout.ca_cert()]);
}

#[test]
fn init_refuses_inconsistent_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layout = PkiLayout::new(dir);
    init(dir, &["auth-svc", "audit-svc"], &["admin"], &[]).unwrap();

    // A certificate without its key cannot be completed without overwriting.
    fs::remove_file(layout.service_key("auth-svc")).unwrap();
    let err = init(dir, &["auth-svc"], &[], &[]).unwrap_err();
    assert!(matches!(err, Error::IncompletePair { .. }), "{err}");
    assert!(err.to_string().contains("auth-svc.key"), "{err}");
    fs::remove_file(layout.service_cert("auth-svc")).unwrap();

    // A certificate from another CA is reported, not replaced.
    let other = CertificateAuthority::generate("other CA").unwrap();
    other
        .issue_service("auth-svc", &[])
        .unwrap()
        .write(&layout.service_cert("auth-svc"), &layout.service_key("auth-svc"))
        .unwrap();
    let before = snapshot(dir);
    let err = init(dir, &["auth-svc"], &[], &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("auth-svc.crt") && msg.contains("not issued by this CA"),
        "{msg}"
    );
    assert_eq!(snapshot(dir), before);

    // A file holding another identity.
    fs::copy(layout.service_cert("audit-svc"), layout.service_cert("auth-svc")).unwrap();
    fs::copy(layout.service_key("audit-svc"), layout.service_key("auth-svc")).unwrap();
    let err = init(dir, &["auth-svc"], &[], &[]).unwrap_err();
    assert!(err.to_string().contains("URI SANs"), "{err}");

    // Key and certificate that do not match.
    fs::copy(layout.operator_key("admin"), layout.service_key("audit-svc")).unwrap();
    let err = init(dir, &["audit-svc"], &[], &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("audit-svc.key") && msg.contains("does not belong"),
        "{msg}"
    );

    // A DNS name asked for now that the existing certificate lacks.
    fs::remove_file(layout.service_cert("audit-svc")).unwrap();
    fs::remove_file(layout.service_key("audit-svc")).unwrap();
    init(dir, &["audit-svc"], &[], &[]).unwrap();
    let err = init(dir, &["audit-svc"], &[], &["audit.example".to_owned()]).unwrap_err();
    assert!(err.to_string().contains("audit.example"), "{err}");
}

#[test]
fn init_rejects_bad_names_before_touching_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    for (services, operators) in [
        (&["../escape"][..], &[][..]),
        (&["Auth"][..], &[][..]),
        (&["auth-svc"][..], &["a/b"][..]),
        (&[""][..], &[][..]),
    ] {
        let err = init(&dir, services, operators, &[]).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    }
    assert!(!dir.exists());
}

#[test]
fn init_reuses_an_existing_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = PkiLayout::new(tmp.path());
    let ca = CertificateAuthority::generate("hospital dev CA").unwrap();
    ca.write_new(&layout.ca_cert(), &layout.ca_key()).unwrap();
    let report = init(tmp.path(), &["records-svc"], &[], &[]).unwrap();
    assert_eq!(report.existing, vec![layout.ca_cert(), layout.ca_key()]);
    assert_eq!(fs::read_to_string(layout.ca_cert()).unwrap(), ca.cert_pem());
    let der = pem_to_der(&fs::read_to_string(layout.service_cert("records-svc")).unwrap());
    parse(&der)
        .verify_signature(Some(parse(ca.cert_der()).public_key()))
        .unwrap();
}

#[test]
fn web_certificate_is_a_localhost_server_certificate_kept_across_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    init(&dir, SERVICES, &["admin"], &[]).unwrap();
    let before = snapshot(&dir);
    let layout = PkiLayout::new(&dir);

    let report = init_web(&dir, &["caremesh.hospital.example".to_owned()]).unwrap();
    assert_eq!(report.created, vec![layout.web_key(), layout.web_cert()]);
    // The CA and the other files were kept as they were.
    let after = snapshot(&dir);
    for (path, bytes) in &before {
        assert_eq!(after.get(path), Some(bytes), "{} changed", path.display());
    }

    let cert_pem = fs::read_to_string(layout.web_cert()).unwrap();
    let der = pem_to_der(&cert_pem);
    let cert = parse(&der);
    let sans = sans(&cert);
    assert_eq!(sans.dns, vec!["localhost", "caremesh.hospital.example"]);
    assert!(sans.ips.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
    assert_eq!(sans.uris, vec![caremesh_pki::web_origin_spiffe_id()]);
    assert_eq!(
        ekus(&cert),
        (true, true, false),
        "serverAuth for browsers, clientAuth towards the services"
    );

    let ca = CertificateAuthority::load(&layout.ca_cert(), &layout.ca_key()).unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(&ca), provider())
        .build()
        .unwrap();
    let end_entity = rustls::pki_types::CertificateDer::from(der.clone());
    for name in ["localhost", "127.0.0.1"] {
        verifier
            .verify_server_cert(
                &end_entity,
                &[],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }

    let again = init_web(&dir, &["caremesh.hospital.example".to_owned()]).unwrap();
    assert!(again.created.is_empty());
    assert_eq!(again.existing, vec![layout.web_cert(), layout.web_key()]);

    // A certificate that no longer matches (here: a new name) is reissued, not an error.
    let renamed = init_web(&dir, &["caremesh.clinic.example".to_owned()]).unwrap();
    assert_eq!(renamed.created, vec![layout.web_key(), layout.web_cert()]);
    assert!(renamed.existing.is_empty());
    let renamed_der = pem_to_der(&fs::read_to_string(layout.web_cert()).unwrap());
    let renamed_cert = parse(&renamed_der);
    assert_eq!(
        self::sans(&renamed_cert).dns,
        vec!["localhost", "caremesh.clinic.example"]
    );
}

//! Wycheproof vectors through the wrappers the protocol uses (`caremesh_crypto::primitives`):
//! X25519 with the contributory check, AES-256-GCM (96-bit nonces, 128-bit tags), HKDF-SHA256 and
//! strict Ed25519 verification (the raw form under `verify_detached`).
//!
//! The vectors are read from `$CAREMESH_VECTORS_DIR`, else from `../shared/vectors/wycheproof`
//! next to the repository; when absent, each test prints why it skipped and passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use caremesh_crypto::CryptoError;
use caremesh_crypto::primitives::{aes256gcm_open, aes256gcm_seal, ed25519_verify, hkdf_sha256, x25519_agree};
use serde_json::Value;
use x25519_dalek::StaticSecret;

fn vectors_dir() -> PathBuf {
    match std::env::var_os("CAREMESH_VECTORS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/wycheproof"),
    }
}

/// The parsed vector file, or `None` (after saying so) when it is not there.
fn load(file: &str) -> Option<Value> {
    let path = vectors_dir().join(file);
    if !path.exists() {
        println!("skipped: Wycheproof vectors not found at {}", path.display());
        return None;
    }
    let text = std::fs::read_to_string(&path).unwrap();
    Some(serde_json::from_str(&text).unwrap())
}

fn tests(groups: &Value) -> impl Iterator<Item = (&Value, &Value)> {
    groups["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["tests"].as_array().unwrap().iter().map(move |test| (group, test)))
}

fn bytes(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().unwrap()).unwrap()
}

fn flags(test: &Value) -> Vec<&str> {
    test["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|flag| flag.as_str().unwrap())
        .collect()
}

fn result(test: &Value) -> &str {
    test["result"].as_str().unwrap()
}

fn report(file: &str, counts: &BTreeMap<String, usize>) -> usize {
    let total: usize = counts.values().sum();
    println!("{file}: {total} vectors ran: {counts:?}");
    assert!(total > 0, "{file}: no vectors ran");
    total
}

#[test]
fn wycheproof_x25519_through_the_contributory_key_agreement() {
    let Some(vectors) = load("x25519_test.json") else {
        return;
    };
    let mut counts = BTreeMap::new();
    for (group, test) in tests(&vectors) {
        assert_eq!(group["curve"], "curve25519");
        let id = &test["tcId"];
        let private: [u8; 32] = bytes(&test["private"]).try_into().unwrap();
        let public: [u8; 32] = bytes(&test["public"]).try_into().unwrap();
        let shared = bytes(&test["shared"]);
        let flags = flags(test);
        let zero_shared = shared.iter().all(|byte| *byte == 0);
        // Flag semantics: an all-zero result is exactly what Wycheproof flags ZeroSharedSecret,
        // and every low-order public key yields it.
        assert_eq!(flags.contains(&"ZeroSharedSecret"), zero_shared, "tcId {id}");
        if flags.contains(&"LowOrderPublic") {
            assert!(zero_shared, "tcId {id}");
        }

        let outcome = x25519_agree(&StaticSecret::from(private), &public, "the test public key");
        let category = match (result(test), zero_shared) {
            ("valid", false) => {
                assert_eq!(outcome.unwrap().as_slice(), shared.as_slice(), "tcId {id}");
                "valid: shared secret matches"
            }
            ("acceptable", false) => {
                // Twist points, non-canonical encodings and the like: RFC 7748 defines the
                // result, and caremesh computes it.
                assert_eq!(outcome.unwrap().as_slice(), shared.as_slice(), "tcId {id}");
                "acceptable (non-zero): shared secret matches"
            }
            ("acceptable" | "valid", true) => {
                // "acceptable" for X25519 itself, but caremesh refuses non-contributory results.
                assert_eq!(
                    outcome.unwrap_err(),
                    CryptoError::NonContributory {
                        what: "the test public key"
                    },
                    "tcId {id}"
                );
                "zero shared secret: refused as non-contributory"
            }
            ("invalid", _) => {
                assert!(outcome.is_err(), "tcId {id}");
                "invalid: refused"
            }
            (other, _) => panic!("tcId {id}: unknown result {other}"),
        };
        *counts.entry(category.to_owned()).or_insert(0) += 1;
    }
    let total = report("x25519_test.json", &counts);
    assert_eq!(total, vectors["numberOfTests"].as_u64().unwrap() as usize);
}

#[test]
fn wycheproof_aes_256_gcm_through_the_aead_wrapper() {
    let Some(vectors) = load("aes_gcm_test.json") else {
        return;
    };
    let mut counts = BTreeMap::new();
    let mut other_parameters = 0usize;
    for (group, test) in tests(&vectors) {
        if group["keySize"] != 256 || group["ivSize"] != 96 || group["tagSize"] != 128 {
            other_parameters += 1;
            continue;
        }
        let id = &test["tcId"];
        let key: [u8; 32] = bytes(&test["key"]).try_into().unwrap();
        let nonce: [u8; 12] = bytes(&test["iv"]).try_into().unwrap();
        let aad = bytes(&test["aad"]);
        let message = bytes(&test["msg"]);
        let mut sealed = bytes(&test["ct"]);
        sealed.extend(bytes(&test["tag"]));
        let opened = aes256gcm_open(&key, &nonce, &aad, &sealed);
        let category = match result(test) {
            "valid" => {
                assert_eq!(opened.unwrap(), message, "tcId {id}");
                assert_eq!(
                    aes256gcm_seal(&key, &nonce, &aad, &message).unwrap(),
                    sealed,
                    "tcId {id}"
                );
                "valid: decrypts and re-encrypts"
            }
            "invalid" => {
                assert_eq!(opened.unwrap_err(), CryptoError::DecryptionFailed, "tcId {id}");
                "invalid: refused"
            }
            other => panic!("tcId {id}: unexpected result {other}"),
        };
        *counts.entry(category.to_owned()).or_insert(0) += 1;
    }
    report("aes_gcm_test.json", &counts);
    println!("aes_gcm_test.json: {other_parameters} vectors with other key/nonce/tag sizes not applicable");
    assert!(counts.contains_key("invalid: refused"));
}

#[test]
fn wycheproof_hkdf_sha256_through_the_kdf_wrapper() {
    let Some(vectors) = load("hkdf_sha256_test.json") else {
        return;
    };
    let mut counts = BTreeMap::new();
    for (_, test) in tests(&vectors) {
        let id = &test["tcId"];
        let size = test["size"].as_u64().unwrap() as usize;
        let mut okm = vec![0u8; size];
        let outcome = hkdf_sha256(
            &bytes(&test["salt"]),
            &bytes(&test["ikm"]),
            &bytes(&test["info"]),
            &mut okm,
        );
        let category = match result(test) {
            "valid" => {
                outcome.unwrap();
                assert_eq!(okm, bytes(&test["okm"]), "tcId {id}");
                "valid: output matches"
            }
            "invalid" => {
                assert!(outcome.is_err(), "tcId {id}");
                "invalid: refused"
            }
            other => panic!("tcId {id}: unexpected result {other}"),
        };
        *counts.entry(category.to_owned()).or_insert(0) += 1;
    }
    let total = report("hkdf_sha256_test.json", &counts);
    assert_eq!(total, vectors["numberOfTests"].as_u64().unwrap() as usize);
}

#[test]
fn wycheproof_ed25519_through_the_raw_verification_under_verify_detached() {
    let Some(vectors) = load("ed25519_test.json") else {
        return;
    };
    let mut counts = BTreeMap::new();
    for (group, test) in tests(&vectors) {
        let id = &test["tcId"];
        let public = bytes(&group["publicKey"]["pk"]);
        let outcome = ed25519_verify(&public, &bytes(&test["msg"]), &bytes(&test["sig"]), "test");
        let category = match result(test) {
            "valid" => {
                outcome.unwrap_or_else(|error| panic!("tcId {id}: {error}"));
                "valid: verifies"
            }
            "invalid" => {
                assert!(outcome.is_err(), "tcId {id} ({:?}) verified", flags(test));
                "invalid: refused"
            }
            other => panic!("tcId {id}: unexpected result {other}"),
        };
        *counts.entry(category.to_owned()).or_insert(0) += 1;
    }
    let total = report("ed25519_test.json", &counts);
    assert_eq!(total, vectors["numberOfTests"].as_u64().unwrap() as usize);
}

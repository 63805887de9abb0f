//! `docs/vectors/fame-v1.json` cannot drift: it is exactly what the deterministic generator
//! (examples/fame_vectors.rs) writes, and read back from the committed text every key opens the
//! records it should (with the expected data key and plaintext), is refused by the others, and
//! every malformed input is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

#[path = "../examples/fame_vectors.rs"]
mod generator;

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use caremesh_abe::{AbeError, Ciphertext, PublicParams, UserKey, decapsulate};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors/fame-v1.json");

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2));
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The file has one `"field": value` per line inside flat objects; this reads the objects of
/// one top-level array (`"name": [` … `]`) as maps of raw values.
fn objects(text: &str, array: &str) -> Vec<HashMap<String, String>> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut current: Option<HashMap<String, String>> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == format!("\"{array}\": [") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        match line {
            "{" => current = Some(HashMap::new()),
            "}" | "}," => out.push(current.take().unwrap()),
            "]" | "]," => break,
            _ => {
                let (key, value) = line.split_once(": ").unwrap();
                let value = value.trim_end_matches(',');
                current
                    .as_mut()
                    .unwrap()
                    .insert(key.trim_matches('"').to_owned(), value.to_owned());
            }
        }
    }
    out
}

fn string(value: &str) -> String {
    let inner = value.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

fn names(value: &str) -> Vec<String> {
    let inner = value.strip_prefix('[').unwrap().strip_suffix(']').unwrap();
    if inner.trim().is_empty() {
        return Vec::new();
    }
    inner.split(", ").map(string).collect()
}

fn committed() -> String {
    std::fs::read_to_string(PATH).expect("docs/vectors/fame-v1.json")
}

#[test]
fn the_committed_file_is_the_generator_output() {
    assert!(
        committed() == generator::generate(),
        "docs/vectors/fame-v1.json differs from the generator: run \
         `cargo run -p caremesh-abe --example fame_vectors > docs/vectors/fame-v1.json`"
    );
}

#[test]
fn the_committed_records_open_with_the_keys_they_name_and_only_those() {
    let text = committed();
    let pp_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("\"public_params\""))
        .unwrap();
    let pp_hex = string(
        pp_line
            .trim()
            .trim_start_matches("\"public_params\": ")
            .trim_end_matches(','),
    );
    PublicParams::from_bytes(&unhex(&pp_hex)).unwrap();

    let keys: HashMap<String, UserKey> = objects(&text, "keys")
        .into_iter()
        .map(|k| {
            let key = UserKey::from_bytes(&unhex(&string(&k["user_key"]))).unwrap();
            assert_eq!(key.attributes().to_vec(), names(&k["attributes"]));
            (string(&k["name"]), key)
        })
        .collect();
    assert_eq!(keys.len(), 4);

    let records = objects(&text, "records");
    assert_eq!(records.len(), 4);
    for record in &records {
        let ciphertext = Ciphertext::from_bytes(&unhex(&string(&record["encapsulated_key"]))).unwrap();
        assert_eq!(ciphertext.policy().canonical(), string(&record["policy"]));
        let aad = generator::record_content_aad(
            &string(&record["record_id"]),
            &string(&record["patient_id"]),
            &string(&record["kind"]),
            record["version"].parse().unwrap(),
        );
        assert_eq!(aad, unhex(&string(&record["aad"])));
        let opens = names(&record["opens_with"]);
        assert!(!opens.is_empty());
        for name in &opens {
            let data_key = decapsulate(&keys[name], &ciphertext).unwrap();
            assert_eq!(data_key.as_bytes().to_vec(), unhex(&string(&record["data_key"])));
            let plaintext = Aes256Gcm::new_from_slice(data_key.as_bytes())
                .unwrap()
                .decrypt(
                    &Nonce::try_from(unhex(&string(&record["nonce"])).as_slice()).unwrap(),
                    Payload {
                        msg: &unhex(&string(&record["ciphertext"])),
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(String::from_utf8(plaintext).unwrap(), string(&record["plaintext"]));
        }
        for name in names(&record["refused_by"]) {
            assert!(matches!(
                decapsulate(&keys[&name], &ciphertext),
                Err(AbeError::PolicyNotSatisfied)
            ));
        }
    }
}

#[test]
fn the_committed_malformed_inputs_are_refused() {
    let text = committed();
    let malformed = objects(&text, "malformed");
    assert!(malformed.len() >= 9);
    for case in malformed {
        let bytes = unhex(&string(&case["bytes"]));
        match string(&case["object"]).as_str() {
            "ciphertext" => assert!(Ciphertext::from_bytes(&bytes).is_err(), "{}", case["name"]),
            "user_key" => assert!(UserKey::from_bytes(&bytes).is_err(), "{}", case["name"]),
            other => panic!("unknown object {other}"),
        }
    }
}

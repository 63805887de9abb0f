//! Writes `docs/vectors/fame-v1.json`: FAME public parameters, user keys, record envelopes (as the
//! SDK puts them on the wire: the serialized ABE ciphertext as `encapsulated_key`, a 12-byte nonce,
//! AES-256-GCM under the data key with the record-content associated data) and malformed inputs,
//! for other implementations (the web app's `web/src/crypto/fame.ts`) to check against.
//!
//! Deterministic: every random value comes from a SHA-256 counter-mode generator seeded with
//! [`SEED`], so running it again gives the same bytes; `tests/fame_vectors.rs` checks the committed
//! file is exactly that output and that it decrypts.
//!
//! `cargo run -p caremesh-abe --example fame_vectors > docs/vectors/fame-v1.json`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use blstrs::{G1Affine, G2Affine};
use caremesh_abe::rand_core::{CryptoRng, Error as RandError, RngCore};
use caremesh_abe::{Ciphertext, Policy, UserKey, decapsulate, encapsulate, keygen, setup};
use sha2::{Digest, Sha256};

/// The seed of every random value in the file.
pub const SEED: &str = "caremesh fame-v1 vectors";

/// The record-content associated data label (crates/crypto/src/policy_envelope.rs).
const RECORD_CONTENT_LABEL: &str = "caremesh-abe-content-v1/record";

/// SHA-256 in counter mode: `SHA-256(seed || counter (u64 BE))` blocks. Only for fixed test
/// vectors, never for real keys.
pub struct VectorRng {
    seed: [u8; 32],
    counter: u64,
    buffer: Vec<u8>,
}

impl VectorRng {
    pub fn new(label: &str) -> Self {
        VectorRng {
            seed: Sha256::digest(label.as_bytes()).into(),
            counter: 0,
            buffer: Vec::new(),
        }
    }
}

impl RngCore for VectorRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest.iter_mut() {
            if self.buffer.is_empty() {
                let mut h = Sha256::new();
                h.update(self.seed);
                h.update(self.counter.to_be_bytes());
                self.counter += 1;
                self.buffer = h.finalize().to_vec();
                self.buffer.reverse();
            }
            *byte = self.buffer.pop().unwrap();
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), RandError> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for VectorRng {}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(bytes);
}

/// `record_content_aad` of caremesh-crypto, rebuilt here (this crate does not depend on it; the
/// SDK's own tests pin that function).
pub fn record_content_aad(record_id: &str, patient_id: &str, kind: &str, version: i64) -> Vec<u8> {
    let mut out = Vec::new();
    lp(&mut out, RECORD_CONTENT_LABEL.as_bytes());
    lp(&mut out, record_id.as_bytes());
    lp(&mut out, patient_id.as_bytes());
    lp(&mut out, kind.as_bytes());
    lp(&mut out, &version.to_be_bytes());
    out
}

/// JSON string escaping for the few characters our values contain.
fn js(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[&str]) -> String {
    format!("[{}]", items.iter().map(|s| js(s)).collect::<Vec<_>>().join(", "))
}

const PATIENT: &str = "0193c6b1-1a2b-7c3d-8e4f-5a6b7c8d9e0f";

/// A compressed G1 encoding on the curve but outside the prime-order subgroup.
fn off_subgroup_g1(rng: &mut VectorRng) -> [u8; 48] {
    loop {
        let mut bytes = [0u8; 48];
        rng.fill_bytes(&mut bytes);
        bytes[0] = 0x80 | (bytes[0] & 0x0f);
        if let Some(p) = Option::<G1Affine>::from(G1Affine::from_compressed_unchecked(&bytes))
            && !bool::from(p.is_torsion_free())
        {
            return bytes;
        }
    }
}

/// A compressed G2 encoding on the twist but outside the prime-order subgroup.
fn off_subgroup_g2(rng: &mut VectorRng) -> [u8; 96] {
    loop {
        let mut bytes = [0u8; 96];
        rng.fill_bytes(&mut bytes);
        bytes[0] = 0x80 | (bytes[0] & 0x0f);
        bytes[48] &= 0x0f;
        if let Some(p) = Option::<G2Affine>::from(G2Affine::from_compressed_unchecked(&bytes))
            && !bool::from(p.is_torsion_free())
        {
            return bytes;
        }
    }
}

/// The whole vector file.
pub fn generate() -> String {
    let mut rng = VectorRng::new(SEED);
    let (pp, msk) = setup(&mut rng);

    let patient_attr = format!("patient:{PATIENT}");
    let emergency_attr = format!("emergency:{PATIENT}");
    let keys: Vec<(&str, Vec<String>)> = vec![
        ("patient", vec![patient_attr.clone(), "role:patient".into()]),
        (
            "cardiologist",
            vec!["role:doctor".into(), "dept:cardiology".into(), "site:north".into()],
        ),
        ("oncologist", vec!["role:doctor".into(), "dept:oncology".into()]),
        ("emergency", vec![emergency_attr.clone(), "role:doctor".into()]),
    ];
    let issued: Vec<(&str, UserKey)> = keys
        .iter()
        .map(|(name, attributes)| (*name, keygen(&pp, &msk, attributes, &mut rng).unwrap()))
        .collect();

    // Record policies as the SDK's record_policy makes them: (other readers) or patient or emergency.
    let records: Vec<(&str, String, &str, &str)> = vec![
        (
            "patient-and-emergency-only",
            format!("\"patient:{PATIENT}\" or \"emergency:{PATIENT}\""),
            "Observation",
            r#"{"resourceType":"Observation","status":"final","code":{"text":"Heart rate"},"valueQuantity":{"value":72,"unit":"/min"}}"#,
        ),
        (
            "cardiology-doctors",
            format!("(\"role:doctor\" and \"dept:cardiology\") or \"patient:{PATIENT}\" or \"emergency:{PATIENT}\""),
            "Condition",
            r#"{"resourceType":"Condition","clinicalStatus":{"text":"active"},"code":{"text":"Atrial fibrillation"}}"#,
        ),
        (
            "nested-and-or",
            "\"role:doctor\" and (\"dept:cardiology\" or \"dept:emergency\") and \"site:north\"".to_owned(),
            "MedicationStatement",
            r#"{"resourceType":"MedicationStatement","status":"active","medicationCodeableConcept":{"text":"Apixaban 5 mg"}}"#,
        ),
        (
            "attribute-reuse",
            "(\"role:doctor\" and \"dept:oncology\") or (\"role:doctor\" and \"site:north\")".to_owned(),
            "AllergyIntolerance",
            r#"{"resourceType":"AllergyIntolerance","code":{"text":"Penicillin"},"criticality":"high"}"#,
        ),
    ];

    let mut out = String::new();
    out.push_str("{\n");
    out.push_str("  \"description\": \"FAME CP-ABE (caremesh-abe) on BLS12-381: public parameters, user keys, record envelopes as the SDK puts them on the wire, malformed inputs. Generated by crates/abe/examples/fame_vectors.rs; checked by crates/abe/tests/fame_vectors.rs and web/src/crypto/fame.test.ts.\",\n");
    out.push_str(&format!("  \"seed\": {},\n", js(SEED)));
    out.push_str(&format!(
        "  \"hash_to_g1_dst\": {},\n",
        js(std::str::from_utf8(caremesh_abe::HASH_TO_G1_DST).unwrap())
    ));
    out.push_str(&format!("  \"record_content_label\": {},\n", js(RECORD_CONTENT_LABEL)));
    out.push_str(&format!("  \"public_params\": \"{}\",\n", hex(&pp.to_bytes())));

    out.push_str("  \"keys\": [\n");
    for (i, (name, key)) in issued.iter().enumerate() {
        let attrs: Vec<&str> = key.attributes().iter().map(String::as_str).collect();
        out.push_str("    {\n");
        out.push_str(&format!("      \"name\": {},\n", js(name)));
        out.push_str(&format!("      \"attributes\": {},\n", list(&attrs)));
        out.push_str(&format!("      \"user_key\": \"{}\"\n", hex(&key.to_bytes())));
        out.push_str(if i + 1 == issued.len() { "    }\n" } else { "    },\n" });
    }
    out.push_str("  ],\n");

    out.push_str("  \"records\": [\n");
    let mut first_record: Option<(Ciphertext, Vec<u8>)> = None;
    for (i, (name, policy_text, kind, content)) in records.iter().enumerate() {
        let policy = Policy::parse(policy_text).unwrap();
        let canonical = policy.canonical();
        assert_eq!(&canonical, policy_text, "vector policies are written canonically");
        let mut id_bytes = [0u8; 16];
        rng.fill_bytes(&mut id_bytes);
        let record_id = format!("record-{}", hex(&id_bytes[..8]));
        let version: i64 = i64::try_from(i).unwrap() + 1;
        let aad = record_content_aad(&record_id, PATIENT, kind, version);
        let (data_key, encapsulated) = encapsulate(&pp, &policy, &mut rng).unwrap();
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new_from_slice(data_key.as_bytes()).unwrap();
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: content.as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap();
        let opens: Vec<&str> = issued
            .iter()
            .filter(|(_, key)| key.can_decrypt(&encapsulated))
            .map(|(name, _)| *name)
            .collect();
        let refused: Vec<&str> = issued
            .iter()
            .filter(|(_, key)| !key.can_decrypt(&encapsulated))
            .map(|(name, _)| *name)
            .collect();
        for (_, key) in issued.iter().filter(|(_, key)| key.can_decrypt(&encapsulated)) {
            assert_eq!(decapsulate(key, &encapsulated).unwrap(), data_key);
        }
        let ct_bytes = encapsulated.to_bytes();
        out.push_str("    {\n");
        out.push_str(&format!("      \"name\": {},\n", js(name)));
        out.push_str(&format!("      \"policy\": {},\n", js(&canonical)));
        out.push_str(&format!("      \"record_id\": {},\n", js(&record_id)));
        out.push_str(&format!("      \"patient_id\": {},\n", js(PATIENT)));
        out.push_str(&format!("      \"kind\": {},\n", js(kind)));
        out.push_str(&format!("      \"version\": {version},\n"));
        out.push_str(&format!("      \"aad\": \"{}\",\n", hex(&aad)));
        out.push_str(&format!("      \"encapsulated_key\": \"{}\",\n", hex(&ct_bytes)));
        out.push_str(&format!("      \"nonce\": \"{}\",\n", hex(&nonce)));
        out.push_str(&format!("      \"ciphertext\": \"{}\",\n", hex(&sealed)));
        out.push_str(&format!("      \"data_key\": \"{}\",\n", hex(data_key.as_bytes())));
        out.push_str(&format!("      \"plaintext\": {},\n", js(content)));
        out.push_str(&format!("      \"opens_with\": {},\n", list(&opens)));
        out.push_str(&format!("      \"refused_by\": {}\n", list(&refused)));
        out.push_str(if i + 1 == records.len() { "    }\n" } else { "    },\n" });
        if first_record.is_none() {
            first_record = Some((encapsulated.clone(), ct_bytes));
        }
    }
    out.push_str("  ],\n");

    // Malformed inputs every decoder must refuse: (name, object, hex).
    let (_, ct_bytes) = first_record.unwrap();
    let key_bytes = issued[0].1.to_bytes().to_vec();
    let mut malformed: Vec<(String, &str, Vec<u8>)> = Vec::new();
    // Ciphertext: version(1) type(1) len(2) policy ct0 (3 x 96) rows(2) then 3 x 48 per row.
    let policy_len = usize::from(u16::from_be_bytes([ct_bytes[2], ct_bytes[3]]));
    let ct0_at = 4 + policy_len;
    let rows_at = ct0_at + 3 * 96 + 2;
    let mut bad = ct_bytes.clone();
    bad[rows_at..rows_at + 48].copy_from_slice(&off_subgroup_g1(&mut rng));
    malformed.push(("ciphertext row point outside the G1 subgroup".into(), "ciphertext", bad));
    let mut bad = ct_bytes.clone();
    bad[ct0_at..ct0_at + 96].copy_from_slice(&off_subgroup_g2(&mut rng));
    malformed.push(("ciphertext ct0 point outside the G2 subgroup".into(), "ciphertext", bad));
    let mut bad = ct_bytes.clone();
    let mut identity = [0u8; 48];
    identity[0] = 0xc0;
    bad[rows_at..rows_at + 48].copy_from_slice(&identity);
    malformed.push(("ciphertext row point is the identity".into(), "ciphertext", bad));
    let mut bad = ct_bytes.clone();
    bad.push(0);
    malformed.push(("ciphertext with a trailing byte".into(), "ciphertext", bad));
    let mut bad = ct_bytes.clone();
    bad.truncate(bad.len() - 1);
    malformed.push(("truncated ciphertext".into(), "ciphertext", bad));
    let mut bad = ct_bytes.clone();
    bad[0] = 2;
    malformed.push(("ciphertext of an unknown format version".into(), "ciphertext", bad));
    // Key: version type count(2) then len || attribute per attribute, sk0 (3 x 96), sk' and parts.
    let count = usize::from(u16::from_be_bytes([key_bytes[2], key_bytes[3]]));
    let mut at = 4;
    for _ in 0..count {
        at += 1 + usize::from(key_bytes[at]);
    }
    let sk0_at = at;
    let sk_prime_at = at + 3 * 96;
    let mut bad = key_bytes.clone();
    bad[sk0_at..sk0_at + 96].copy_from_slice(&off_subgroup_g2(&mut rng));
    malformed.push(("user key sk0 point outside the G2 subgroup".into(), "user_key", bad));
    let mut bad = key_bytes.clone();
    bad[sk_prime_at..sk_prime_at + 48].copy_from_slice(&off_subgroup_g1(&mut rng));
    malformed.push(("user key sk' point outside the G1 subgroup".into(), "user_key", bad));
    let mut bad = key_bytes.clone();
    bad[sk_prime_at + 48] ^= 0x01;
    malformed.push(("user key point not on the curve (flipped bit)".into(), "user_key", bad));
    for (_, object, bytes) in &malformed {
        match *object {
            "ciphertext" => assert!(Ciphertext::from_bytes(bytes).is_err()),
            _ => assert!(UserKey::from_bytes(bytes).is_err()),
        }
    }
    out.push_str("  \"malformed\": [\n");
    for (i, (name, object, bytes)) in malformed.iter().enumerate() {
        out.push_str("    {\n");
        out.push_str(&format!("      \"name\": {},\n", js(name)));
        out.push_str(&format!("      \"object\": {},\n", js(object)));
        out.push_str(&format!("      \"bytes\": \"{}\"\n", hex(bytes)));
        out.push_str(if i + 1 == malformed.len() {
            "    }\n"
        } else {
            "    },\n"
        });
    }
    out.push_str("  ],\n");

    // Policy texts with their canonical form and leaves (one per span-program row), or null when
    // the parser refuses them: the policy language other implementations must match.
    let texts = [
        r#""a:x""#,
        r#"(("a:x"))"#,
        r#""a:x" AND ("b:y" and "c:z")"#,
        r#" ("a:x" or "b:y") and "c:z" "#,
        r#"("a:x" and "b:y") or ("a:x" and "c:z")"#,
        r#""role:doctor" and ("dept:cardiology" or "dept:emergency") and "site:north""#,
        r#""patient:0193c6b1-1a2b-7c3d-8e4f-5a6b7c8d9e0f" or "emergency:0193c6b1-1a2b-7c3d-8e4f-5a6b7c8d9e0f""#,
        r#""a:x" and "b:y" or "c:z""#,
        r#"a:x"#,
        r#""ax""#,
        r#"("a:x""#,
        r#""a:x")"#,
        r#""a:x" and"#,
        r#""A:x""#,
        r#""a:""#,
        r#""a:x y""#,
        "",
    ];
    out.push_str("  \"policies\": [\n");
    for (i, text) in texts.iter().enumerate() {
        out.push_str("    {\n");
        out.push_str(&format!("      \"text\": {},\n", js(text)));
        match Policy::parse(text) {
            Ok(policy) => {
                out.push_str(&format!("      \"canonical\": {},\n", js(&policy.canonical())));
                out.push_str(&format!("      \"leaves\": {}\n", list(&policy.leaves())));
            }
            Err(_) => {
                out.push_str("      \"canonical\": null,\n");
                out.push_str("      \"leaves\": null\n");
            }
        }
        out.push_str(if i + 1 == texts.len() { "    }\n" } else { "    },\n" });
    }
    out.push_str("  ]\n}\n");
    out
}

#[allow(dead_code)]
fn main() {
    print!("{}", generate());
}

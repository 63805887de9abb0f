//! Writes the fixed test material (`fuzz/fixtures/`) and the generated seed files of
//! `fuzz/corpus/<target>/` (valid objects made by the real code, plus a few malformed ones).
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus
//!
//! Fixtures that already exist are reused, so running it again only refreshes the generated
//! seeds (their random parts change) and keeps them consistent with the fixtures the targets
//! compile in. Delete `fuzz/fixtures/*` first to start from new keys. Hand-written seeds in the
//! corpus directories (without the `gen-` prefix) are left alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz_targets/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{MasterKey, Policy, UserKey, decapsulate, encapsulate, keygen, setup};
use caremesh_crypto::policy_envelope::{open_user_key, seal_user_key};
use caremesh_crypto::{DeviceKeys, IdentityKeyPair, open, seal, verify_bundle};
use caremesh_proto::abe::v1::SealedUserKey;
use caremesh_proto::messaging::v1::{Envelope, KeyBundle};
use caremesh_tlog::checkpoint::Checkpoint;
use caremesh_token::Claims;
use prost::Message as _;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = root().join("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("gen-{name}")), bytes).unwrap();
}

/// Reads a fixture, or makes it with `make` and stores it.
fn fixture(name: &str, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    let path = root().join("fixtures").join(name);
    if let Ok(bytes) = fs::read(&path) {
        return bytes;
    }
    let bytes = make();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &bytes).unwrap();
    println!("new fixture {}", path.display());
    bytes
}

fn truncated(bytes: &[u8], keep: usize) -> Vec<u8> {
    bytes[..keep.min(bytes.len())].to_vec()
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = at.min(out.len() - 1);
    out[at] ^= 0x01;
    out
}

fn main() {
    abe();
    let device_json = fixture("recipient_device.json", || {
        let mut device = DeviceKeys::generate(common::RECIPIENT_USER_ID).unwrap();
        device.publish_request(3).unwrap();
        serde_json::to_vec_pretty(&device).unwrap()
    });
    let sender_json = fixture("sender_identity.json", || {
        serde_json::to_vec_pretty(&IdentityKeyPair::generate().unwrap()).unwrap()
    });
    let device: DeviceKeys = serde_json::from_slice(&device_json).unwrap();
    let sender: IdentityKeyPair = serde_json::from_slice(&sender_json).unwrap();
    envelopes_and_bundles(&device, &sender, &device_json);
    sealed_user_keys(&device);
    tokens();
    checkpoints();
}

const POLICIES: &[&str] = &[
    r#""role:doctor" and ("dept:cardiology" or "dept:emergency")"#,
    r#""patient:0193c6b1-1a2b-7c3d-8e4f-000000000001" or "emergency:0193c6b1-1a2b-7c3d-8e4f-000000000001" or ("role:doctor" and "dept:cardiology")"#,
    r#""role:nurse""#,
    r#"("a:x" and "b:y") or ("a:x" and "c:z")"#,
];

fn abe() {
    let master = fixture("abe_master_key.bin", || setup(&mut OsRng).1.to_bytes().to_vec());
    let master = MasterKey::from_bytes(&master).unwrap();
    let params = master.public_params();
    let user_key = fixture("user_key.bin", || {
        keygen(params, &master, &["role:doctor", "dept:cardiology"], &mut OsRng)
            .unwrap()
            .to_bytes()
            .to_vec()
    });
    let doctor = UserKey::from_bytes(&user_key).unwrap();

    let params_bytes = params.to_bytes();
    write("public_params_from_bytes", "valid", &params_bytes);
    write("public_params_from_bytes", "truncated", truncated(&params_bytes, 100));
    write("public_params_from_bytes", "flipped-point", flipped(&params_bytes, 40));
    let mut version = params_bytes.clone();
    version[0] = 2;
    write("public_params_from_bytes", "version-2", version);

    write("user_key_from_bytes", "doctor-cardiology", &user_key);
    let nurse = keygen(params, &master, &["role:nurse", "ward:3b", "team:night"], &mut OsRng).unwrap();
    write("user_key_from_bytes", "nurse", &nurse.to_bytes()[..]);
    write("user_key_from_bytes", "trailing-byte", [&user_key[..], &[0]].concat());

    for (i, text) in POLICIES.iter().enumerate() {
        let policy = Policy::parse(text).unwrap();
        let (data_key, ciphertext) = encapsulate(params, &policy, &mut OsRng).unwrap();
        // The seeds reach decapsulation in ciphertext_from_bytes: check the fixture key opens them.
        if policy.is_satisfied_by(doctor.attributes()) {
            assert_eq!(decapsulate(&doctor, &ciphertext).unwrap(), data_key);
        }
        let bytes = ciphertext.to_bytes();
        write("ciphertext_from_bytes", &format!("policy-{i}"), &bytes);
        write("encapsulated_policy", &format!("policy-{i}"), &bytes);
        if i == 0 {
            write("ciphertext_from_bytes", "truncated", truncated(&bytes, bytes.len() - 1));
            write("encapsulated_policy", "flipped-policy", flipped(&bytes, 6));
        }
    }

    for (i, text) in POLICIES.iter().enumerate() {
        write("policy_parser", &format!("policy-{i}"), text);
    }
    let patient = "0193c6b1-1a2b-7c3d-8e4f-000000000001";
    write("check_policy", "record-ok", format!("{patient}\0{}", POLICIES[1]));
    write(
        "check_policy",
        "record-no-emergency",
        format!("{patient}\0\"patient:{patient}\" or \"role:doctor\""),
    );
    write("check_policy", "plain", POLICIES[0]);
    write(
        "check_policy",
        "deep",
        format!("{}\"a:1\"{}", "(".repeat(17), ")".repeat(17)),
    );
    write("check_policy", "bad-attribute", r#""Role:doctor" or "x""#);
}

fn bundle(device: &DeviceKeys, spare: &mut DeviceKeys, one_time: Option<&str>) -> KeyBundle {
    KeyBundle {
        user_id: device.user_id().to_owned(),
        identity_key: Some(device.identity_proto().unwrap()),
        signed_prekey: Some(device.signed_prekey().to_proto()),
        one_time_prekey: one_time.map(|id| spare.take_one_time_prekey(id).unwrap().to_proto()),
    }
}

fn envelopes_and_bundles(device: &DeviceKeys, sender: &IdentityKeyPair, device_json: &[u8]) {
    let mut spare: DeviceKeys = serde_json::from_slice(device_json).unwrap();
    let ids: Vec<String> = device.one_time_prekey_ids().map(str::to_owned).collect();
    let context = common::message_context();
    let mut bundles = vec![("no-one-time-prekey", bundle(device, &mut spare, None))];
    bundles.push((
        "one-time-prekey",
        bundle(device, &mut spare, ids.first().map(String::as_str)),
    ));
    for (name, key_bundle) in &bundles {
        write("verify_bundle", name, key_bundle.encode_to_vec());
        let verified = verify_bundle(key_bundle, common::RECIPIENT_USER_ID).unwrap();
        let envelope = seal(sender, &context, &verified, b"BP 120/80, see you on Monday").unwrap();
        write("envelope_open", name, envelope.encode_to_vec());
        // The seed opens with the fixture device, as the target will try.
        let mut fresh: DeviceKeys = serde_json::from_slice(device_json).unwrap();
        let opened = open(&mut fresh, &sender.public(), &context, &envelope).unwrap();
        assert_eq!(opened, b"BP 120/80, see you on Monday");
        if *name == "one-time-prekey" {
            let mut tampered = envelope.clone();
            tampered.ciphertext[0] ^= 1;
            write("envelope_open", "tampered-ciphertext", tampered.encode_to_vec());
            let wrong_version = Envelope {
                version: 2,
                ..envelope.clone()
            };
            write("envelope_open", "version-2", wrong_version.encode_to_vec());
            let short = Envelope {
                ciphertext: envelope.ciphertext[..15].to_vec(),
                ..envelope
            };
            write("envelope_open", "short-ciphertext", short.encode_to_vec());
        }
    }
    let mut forged = bundles[1].1.clone();
    if let Some(prekey) = forged.signed_prekey.as_mut() {
        prekey.signature[0] ^= 1;
    }
    write("verify_bundle", "bad-prekey-signature", forged.encode_to_vec());
    let mut other = bundles[0].1.clone();
    other.user_id = "fuzz-mallory".to_owned();
    write("verify_bundle", "claims-other-user", other.encode_to_vec());
}

fn sealed_user_keys(device: &DeviceKeys) {
    let user_key = fs::read(root().join("fixtures/user_key.bin")).unwrap();
    let identity = device.identity().public();
    let sealed = seal_user_key(common::RECIPIENT_USER_ID, common::USER_KEY_ID, &identity, &user_key).unwrap();
    write("open_user_key", "valid", sealed.encode_to_vec());
    let opened = open_user_key(
        device.identity(),
        common::RECIPIENT_USER_ID,
        common::USER_KEY_ID,
        &sealed,
    )
    .unwrap();
    assert_eq!(&opened[..], &user_key[..]);
    let other = seal_user_key(
        common::RECIPIENT_USER_ID,
        common::USER_KEY_ID,
        &identity,
        b"not a user key",
    )
    .unwrap();
    write("open_user_key", "not-a-user-key", other.encode_to_vec());
    let wrong = SealedUserKey {
        version: 2,
        ..sealed.clone()
    };
    write("open_user_key", "version-2", wrong.encode_to_vec());
    let low_order = SealedUserKey {
        ephemeral_public_key: vec![0; 32],
        ..sealed
    };
    write("open_user_key", "low-order-ephemeral", low_order.encode_to_vec());
}

fn tokens() {
    use base64::Engine as _;
    let key = common::token_key();
    let claims = Claims {
        kid: caremesh_token::key_id(&key.verifying_key()),
        sub: "0193c6b1-1a2b-7c3d-8e4f-000000000002".to_owned(),
        role: "doctor".to_owned(),
        attrs: vec!["role:doctor".to_owned(), "dept:cardiology".to_owned()],
        sid: "0193c6b1-1a2b-7c3d-8e4f-0000000000aa".to_owned(),
        aal: 2,
        iat: common::TOKEN_NOW - 60,
        exp: common::TOKEN_NOW + 840,
    };
    let valid = caremesh_token::sign(&claims, &key).unwrap();
    write("token_verify", "valid", &valid);
    let public = key.verifying_key();
    assert_eq!(
        caremesh_token::verify(&valid, |_| Some(public), common::TOKEN_NOW).unwrap(),
        claims
    );
    let expired = Claims {
        exp: common::TOKEN_NOW,
        ..claims.clone()
    };
    write("token_verify", "expired", caremesh_token::sign(&expired, &key).unwrap());
    let future = Claims {
        iat: common::TOKEN_NOW + 31,
        ..claims.clone()
    };
    write(
        "token_verify",
        "not-yet-valid",
        caremesh_token::sign(&future, &key).unwrap(),
    );
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    write(
        "token_verify",
        "other-key",
        caremesh_token::sign(&claims, &other_key).unwrap(),
    );
    let (signed, signature) = valid.rsplit_once('.').unwrap();
    let admin = Claims {
        role: "admin".to_owned(),
        ..claims
    };
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap());
    write("token_verify", "tampered-role", format!("cmt1.{payload}.{signature}"));
    write(
        "token_verify",
        "jwt-alg-none",
        format!("eyJhbGciOiJub25lIn0.{}.", signed.trim_start_matches("cmt1.")),
    );
}

fn checkpoints() {
    let signer = common::note_signer();
    let mut checkpoint = Checkpoint::new(common::NOTE_ORIGIN, 12345, [0x5a; 32]);
    let note = signer.sign(&checkpoint);
    write("checkpoint", "signed-note", &note);
    write("checkpoint", "body", checkpoint.body());
    checkpoint.extensions.push("extension line".to_owned());
    let other =
        caremesh_tlog::checkpoint::NoteSigner::new("witness.example", ed25519_dalek::SigningKey::from_bytes(&[10; 32]))
            .unwrap();
    let witnessed = other.sign(&checkpoint);
    let ours = signer.sign(&checkpoint);
    let our_line = ours.rsplit_once("\n\n").unwrap().1;
    let two = format!("{witnessed}{our_line}");
    assert_eq!(
        signer
            .verifier()
            .open_checkpoint(&two, Some(common::NOTE_ORIGIN))
            .unwrap(),
        checkpoint
    );
    assert!(signer.verifier().open_checkpoint(&note, None).is_ok());
    write("checkpoint", "two-signatures", two);
    write("checkpoint", "verifier-key", signer.verifier().to_text());
    write(
        "checkpoint",
        "empty-tree",
        signer.sign(&Checkpoint::new(common::NOTE_ORIGIN, 0, [0; 32])),
    );
    write("checkpoint", "tampered-size", note.replacen("12345", "12346", 1));
}

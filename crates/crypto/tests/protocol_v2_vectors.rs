//! Protocol v2 known-answer tests: `docs/vectors/protocol-v2.json`, made by the independent Python
//! implementation in `tools/vectorgen/` from `docs/protocol.md`. Every output is recomputed here
//! through the crate's public API from the vector's inputs. The web app's tests read the same file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use caremesh_crypto::primitives::{KemSecretKey, kem_encapsulate_with};
use caremesh_crypto::v2::archive::ArchiveContext;
use caremesh_crypto::v2::device::device_key_message;
use caremesh_crypto::v2::pqxdh::{self, Party};
use caremesh_crypto::v2::ratchet::{SessionPeer, message_aad};
use caremesh_crypto::v2::*;
use caremesh_crypto::{CryptoError, IdentityKeyPair};
use serde_json::{Value, json};
use x25519_dalek::{PublicKey, StaticSecret};

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors/protocol-v2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cases<'a>(vectors: &'a Value, section: &str) -> &'a [Value] {
    let cases = vectors[section].as_array().unwrap();
    assert!(!cases.is_empty(), "no {section} vectors");
    cases
}

fn bytes(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().unwrap()).unwrap()
}

fn b32(value: &Value) -> [u8; 32] {
    bytes(value).try_into().unwrap()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap()
}

fn identity(user: &Value, prefix: &str) -> IdentityKeyPair {
    let key_id = if prefix.is_empty() {
        "identity_key_id".to_owned()
    } else {
        format!("{prefix}identity_key_id")
    };
    IdentityKeyPair::from_secrets(
        text(&user[key_id.as_str()]),
        &b32(&user["identity_signing_seed"]),
        &b32(&user["identity_dh_secret"]),
    )
    .unwrap()
}

fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// The error's variant name, as the vectors spell it.
fn error_name(error: &CryptoError) -> String {
    format!("{error:?}").split(['(', ' ', '{']).next().unwrap().to_owned()
}

#[test]
fn ml_kem_768_known_answers() {
    let vectors = vectors();
    for case in cases(&vectors, "ml_kem_768") {
        let name = text(&case["name"]);
        let key = KemSecretKey::from_seed(&bytes(&case["seed"]).try_into().unwrap());
        assert_eq!(
            key.public_key(),
            bytes(&case["encapsulation_key"]),
            "{name}: encapsulation key"
        );
        let (ciphertext, shared) = kem_encapsulate_with(&key.public_key(), &b32(&case["m"])).unwrap();
        assert_eq!(ciphertext, bytes(&case["ciphertext"]), "{name}: ciphertext");
        assert_eq!(*shared, b32(&case["shared_secret"]), "{name}: shared secret");
        assert_eq!(*key.decapsulate(&ciphertext).unwrap(), *shared, "{name}: decapsulation");
        let rejected = key.decapsulate(&bytes(&case["tampered_ciphertext"])).unwrap();
        assert_eq!(
            *rejected,
            b32(&case["tampered_shared_secret"]),
            "{name}: implicit rejection"
        );
        assert_ne!(*rejected, *shared);
    }
}

#[test]
fn device_key_signatures() {
    let vectors = vectors();
    for case in cases(&vectors, "device_keys") {
        let name = text(&case["name"]);
        let user_id = text(&case["user_id"]);
        let device_id = text(&case["device_id"]);
        let me = identity(case, "");
        assert_eq!(me.signing_public_key(), b32(&case["identity_signing_public"]), "{name}");
        assert_eq!(me.dh_public_key(), b32(&case["identity_dh_public"]), "{name}");
        let published = me.to_proto(user_id).unwrap();
        assert_eq!(
            published.dh_public_key_signature,
            bytes(&case["identity_binding_signature"]),
            "{name}"
        );
        let mut kinds = Vec::new();
        for key in case["keys"].as_array().unwrap() {
            let kind = match text(&key["kind_label"]) {
                "x25519-signed-prekey" => DeviceKeyKind::SignedPrekey,
                "ml-kem-768-last-resort-prekey" => DeviceKeyKind::KemLastResort,
                "ml-kem-768-one-time-prekey" => DeviceKeyKind::KemOneTime,
                other => panic!("unknown kind label {other}"),
            };
            kinds.push(kind);
            let public = match kind {
                DeviceKeyKind::SignedPrekey => x25519_public(&b32(&key["secret"])).to_vec(),
                _ => KemSecretKey::from_seed(&bytes(&key["secret"]).try_into().unwrap()).public_key(),
            };
            assert_eq!(public, bytes(&key["public_key"]), "{name}: {kind:?} public key");
            let key_id = text(&key["key_id"]);
            let message = device_key_message(kind, user_id, me.key_id(), device_id, key_id, &public).unwrap();
            assert_eq!(message, bytes(&key["message"]), "{name}: {kind:?} signed bytes");
            let signature = sign_device_key(&me, kind, user_id, device_id, key_id, &public).unwrap();
            assert_eq!(
                signature.to_vec(),
                bytes(&key["signature"]),
                "{name}: {kind:?} signature"
            );
            verify_device_key(&me.public(), kind, user_id, device_id, key_id, &public, &signature).unwrap();
            // The same signature under another kind label must not verify.
            let other = if kind == DeviceKeyKind::KemOneTime {
                DeviceKeyKind::KemLastResort
            } else {
                DeviceKeyKind::KemOneTime
            };
            if kind != DeviceKeyKind::SignedPrekey {
                let refused = verify_device_key(&me.public(), other, user_id, device_id, key_id, &public, &signature);
                assert!(
                    matches!(refused, Err(CryptoError::BadSignature { .. })),
                    "{name}: kind confusion"
                );
            }
        }
        assert_eq!(kinds.len(), 3, "{name}: all three kinds");
    }
}

#[test]
fn device_lists() {
    let vectors = vectors();
    let mut valid = 0;
    for case in cases(&vectors, "device_lists") {
        let name = text(&case["name"]);
        let ids: Vec<String> = case["device_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| text(id).to_owned())
            .collect();
        let user_id = text(&case["user_id"]);
        let version = case["version"].as_u64().unwrap();
        let list = DeviceList::new(user_id, text(&case["identity_key_id"]), version, ids.clone());
        if let Some(expected) = case.get("error") {
            let error = list.expect_err(name);
            assert!(
                matches!(error, CryptoError::InvalidDeviceList(_)),
                "{name}: {error:?} ({expected})"
            );
            continue;
        }
        let list = list.unwrap();
        assert_eq!(list.encoding().unwrap(), bytes(&case["encoding"]), "{name}: encoding");
        let signer = IdentityKeyPair::from_secrets(
            text(&case["identity_key_id"]),
            &b32(&case["identity_signing_seed"]),
            &[7; 32],
        )
        .unwrap();
        let signature = list.sign(&signer).unwrap();
        assert_eq!(signature.to_vec(), bytes(&case["signature"]), "{name}: signature");
        let verified = DeviceList::verify(user_id, &signer.public(), version, ids.clone(), &signature).unwrap();
        assert_eq!(verified, list);
        // A server that edits the list (drops a device, or bumps the version) breaks the signature.
        let refused = DeviceList::verify(user_id, &signer.public(), version + 1, ids.clone(), &signature);
        assert!(
            matches!(refused, Err(CryptoError::BadSignature { .. })),
            "{name}: version edit"
        );
        if ids.len() > 1 {
            let refused = DeviceList::verify(user_id, &signer.public(), version, ids[1..].to_vec(), &signature);
            assert!(
                matches!(refused, Err(CryptoError::BadSignature { .. })),
                "{name}: device removed"
            );
        }
        valid += 1;
    }
    assert!(valid >= 2);
}

/// The responder's device secrets with exactly the vector's prekeys, through the persisted form.
fn responder_device(
    device_id: &str,
    spk: &[u8; 32],
    opk: Option<&[u8; 32]>,
    kem_seed: &[u8],
    kem_kind: u32,
) -> (DeviceSecrets, BTreeMap<&'static str, String>) {
    let ids: BTreeMap<&str, String> = [
        ("spk", "01941f29-7c00-7000-8000-000000000001"),
        ("opk", "01941f29-7c00-7000-8000-000000000002"),
        ("kem", "01941f29-7c00-7000-8000-000000000003"),
        ("other_kem", "01941f29-7c00-7000-8000-000000000004"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    let kem = json!({ "key_id": ids["kem"], "secret": hex::encode(kem_seed) });
    let other_kem = json!({ "key_id": ids["other_kem"], "secret": hex::encode([9u8; 64]) });
    let (last_resort, kem_one_time) = if kem_kind == 1 {
        (kem, vec![])
    } else {
        (other_kem, vec![kem])
    };
    let repr = json!({
        "format": 1,
        "device_id": device_id,
        "signed_prekey": { "key_id": ids["spk"], "secret": hex::encode(spk) },
        "previous_signed_prekey": null,
        "last_resort": last_resort,
        "previous_last_resort": null,
        "one_time": opk.map(|opk| vec![json!({ "key_id": ids["opk"], "secret": hex::encode(opk) })]).unwrap_or_default(),
        "kem_one_time": kem_one_time,
    });
    (serde_json::from_value(repr).unwrap(), ids)
}

#[test]
fn pqxdh_both_sides() {
    let vectors = vectors();
    for case in cases(&vectors, "pqxdh") {
        let name = text(&case["name"]);
        let (a, b) = (&case["initiator"], &case["responder"]);
        let (alice, bob) = (identity(a, ""), identity(b, ""));
        let spk = b32(&case["responder_spk_secret"]);
        let opk = case["responder_opk_secret"]
            .as_str()
            .map(|_| b32(&case["responder_opk_secret"]));
        let kem_seed = bytes(&case["responder_kem_seed"]);
        let kem_kind = case["responder_kem_kind"].as_u64().unwrap() as u32;
        let (device, ids) = responder_device(text(&b["device_id"]), &spk, opk.as_ref(), &kem_seed, kem_kind);

        // The bundle the directory would serve, signed by bob, verified as a client does.
        let (b_user, b_device) = (text(&b["user_id"]), text(&b["device_id"]));
        let kem_public = KemSecretKey::from_seed(&kem_seed.clone().try_into().unwrap()).public_key();
        let kind = DeviceKeyKind::from_kem_code(kem_kind).unwrap();
        let sign = |kind, key_id: &str, public: &[u8]| {
            sign_device_key(&bob, kind, b_user, b_device, key_id, public)
                .unwrap()
                .to_vec()
        };
        let bundle = DeviceBundle {
            user_id: b_user.to_owned(),
            device_id: b_device.to_owned(),
            signed_prekey: PublishedKey {
                key_id: ids["spk"].clone(),
                public_key: x25519_public(&spk).to_vec(),
                signature: sign(DeviceKeyKind::SignedPrekey, &ids["spk"], &x25519_public(&spk)),
            },
            kem_prekey: Some(KemPrekeyPublic {
                key_id: ids["kem"].clone(),
                kind,
                public_key: kem_public.clone(),
                signature: sign(kind, &ids["kem"], &kem_public),
            }),
            one_time_prekey: opk.map(|opk| PublishedKey {
                key_id: ids["opk"].clone(),
                public_key: x25519_public(&opk).to_vec(),
                signature: vec![],
            }),
        };
        let list = DeviceList::new(b_user, bob.key_id(), 1, [b_device.to_owned()]).unwrap();
        let verified = verify_device_bundle(&bundle, &bob.public(), &list).unwrap();

        let expected = &case["expected"];
        let sent = pqxdh::initiate_with(
            &alice,
            text(&a["user_id"]),
            text(&a["device_id"]),
            &verified,
            &b32(&case["initiator_ephemeral_secret"]),
            &b32(&case["kem_m"]),
        )
        .unwrap();
        assert_eq!(*sent.sk, b32(&expected["sk"]), "{name}: SK");
        assert_eq!(sent.ad, bytes(&expected["ad"]), "{name}: AD");
        assert_eq!(
            sent.preamble.kem_ciphertext,
            bytes(&expected["kem_ciphertext"]),
            "{name}: CT"
        );
        assert_eq!(
            sent.preamble.one_time_prekey_id.is_empty(),
            opk.is_none(),
            "{name}: OPK named"
        );

        let bob_public = bob.public();
        let alice_public = alice.public();
        let received = pqxdh::respond(
            &bob,
            Party {
                user_id: b_user,
                device_id: b_device,
                identity: &bob_public,
            },
            &device,
            Party {
                user_id: text(&a["user_id"]),
                device_id: text(&a["device_id"]),
                identity: &alice_public,
            },
            &sent.preamble,
        )
        .unwrap();
        assert_eq!(*received.sk, *sent.sk, "{name}: responder SK");
        assert_eq!(received.ad, sent.ad, "{name}: responder AD");

        // Downgrade: the same bundle without its ML-KEM prekey, or with another one, is refused.
        let stripped = DeviceBundle {
            kem_prekey: None,
            ..bundle.clone()
        };
        assert_eq!(
            verify_device_bundle(&stripped, &bob.public(), &list),
            Err(CryptoError::MissingKemPrekey)
        );
        let mut swapped = bundle.clone();
        swapped.kem_prekey.as_mut().unwrap().public_key = KemSecretKey::from_seed(&[3; 64]).public_key();
        assert!(matches!(
            verify_device_bundle(&swapped, &bob.public(), &list),
            Err(CryptoError::BadSignature { .. })
        ));
        // A device the signed list does not name is refused.
        let other_list = DeviceList::new(
            b_user,
            bob.key_id(),
            2,
            ["01941f29-7c00-7000-8000-0000000000ff".to_owned()],
        )
        .unwrap();
        assert!(matches!(
            verify_device_bundle(&bundle, &bob.public(), &other_list),
            Err(CryptoError::UnknownDevice(_))
        ));
    }
}

/// Ratchet keys from a vector's list. A refused message does not use one up: the position is
/// part of the state that a refusal leaves unchanged.
struct ListKeys {
    keys: Vec<[u8; 32]>,
    next: usize,
}

impl RatchetKeys for ListKeys {
    fn next_secret(&mut self) -> Result<StaticSecret, CryptoError> {
        let key = self.keys.get(self.next).expect("the vector has enough ratchet secrets");
        self.next += 1;
        Ok(StaticSecret::from(*key))
    }
}

fn list_keys(values: &Value) -> ListKeys {
    ListKeys {
        keys: values.as_array().unwrap().iter().map(b32).collect(),
        next: 0,
    }
}

#[test]
fn double_ratchet_conversations() {
    let vectors = vectors();
    for case in cases(&vectors, "ratchet") {
        let name = text(&case["name"]);
        let (a_device, b_device) = (text(&case["initiator_device_id"]), text(&case["responder_device_id"]));
        let p = &case["preamble"];
        let preamble = Preamble {
            sender_identity_key_id: text(&p["sender_identity_key_id"]).to_owned(),
            ephemeral_public: bytes(&p["ephemeral_public"]),
            signed_prekey_id: text(&p["spk_id"]).to_owned(),
            one_time_prekey_id: text(&p["opk_id"]).to_owned(),
            kem_prekey_id: text(&p["kem_prekey_id"]).to_owned(),
            kem_kind: p["kem_kind"].as_u64().unwrap() as u32,
            kem_ciphertext: bytes(&p["kem_ciphertext"]),
        };
        let sk = b32(&case["sk"]);
        let ad = bytes(&case["ad"]);
        let spk = StaticSecret::from(b32(&case["responder_spk_secret"]));
        let peer = |local: &str, remote: &str| SessionPeer {
            local_device_id: local.to_owned(),
            peer_user_id: "peer".to_owned(),
            peer_device_id: remote.to_owned(),
            peer_identity_key_id: "unused".to_owned(),
        };
        let mut keys_a = list_keys(&case["initiator_ratchet_secrets"]);
        let mut keys_b = list_keys(&case["responder_ratchet_secrets"]);
        let mut alice = Session::initiator(
            peer(a_device, b_device),
            &sk,
            ad.clone(),
            &PublicKey::from(&spk).to_bytes(),
            preamble.clone(),
            &mut keys_a,
        )
        .unwrap();
        let mut bob = Session::responder(peer(b_device, a_device), &sk, ad.clone(), &spk, &preamble).unwrap();
        let mut sent: BTreeMap<String, (String, RatchetMessage, Vec<u8>)> = BTreeMap::new();
        let (mut sends, mut refusals) = (0, 0);
        for step in case["steps"].as_array().unwrap() {
            let label = text(&step["label"]).to_owned();
            if let Some(who) = step.get("send") {
                let session = if text(who) == "A" { &mut alice } else { &mut bob };
                let message_id = text(&step["message_id"]);
                let plaintext = bytes(&step["plaintext"]);
                let message = session.encrypt(message_id, &plaintext).unwrap();
                let expected = &step["expected"];
                assert_eq!(message.header.dh, b32(&expected["dh"]), "{name} {label}: dh");
                assert_eq!(
                    u64::from(message.header.pn),
                    expected["pn"].as_u64().unwrap(),
                    "{name} {label}: pn"
                );
                assert_eq!(
                    u64::from(message.header.n),
                    expected["n"].as_u64().unwrap(),
                    "{name} {label}: n"
                );
                assert_eq!(
                    message.header.preamble.is_some(),
                    expected["has_preamble"].as_bool().unwrap(),
                    "{name} {label}"
                );
                assert_eq!(
                    message.header.encode().unwrap(),
                    bytes(&expected["header"]),
                    "{name} {label}: header"
                );
                assert_eq!(
                    message_aad(&ad, message_id, &message.header).unwrap(),
                    bytes(&expected["aad"]),
                    "{name} {label}: aad"
                );
                assert_eq!(
                    message.ciphertext,
                    bytes(&expected["ciphertext"]),
                    "{name} {label}: ciphertext"
                );
                sent.insert(label, (message_id.to_owned(), message, plaintext));
                sends += 1;
                continue;
            }
            let receiver_is_a = text(&step["receive"]) == "A";
            let (session, keys) = if receiver_is_a {
                (&mut alice, &mut keys_a)
            } else {
                (&mut bob, &mut keys_b)
            };
            let (message_id, message, plaintext) = sent[&label].clone();
            let (mut message_id, mut message) = (message_id, message);
            if let Some(tamper) = step.get("tamper") {
                let value = &tamper["value"];
                match text(&tamper["field"]) {
                    "ciphertext" => message.ciphertext = bytes(value),
                    "header_dh" => message.header.dh = b32(value),
                    "header_n" => message.header.n = value.as_u64().unwrap() as u32,
                    "message_id" => message_id = text(value).to_owned(),
                    other => panic!("unknown tamper field {other}"),
                }
            }
            match step.get("error") {
                None => {
                    let opened = session.decrypt(&message_id, &message, keys).unwrap();
                    assert_eq!(*opened, plaintext, "{name}: receive {label}");
                }
                Some(expected) => {
                    let before = serde_json::to_string(&*session).unwrap();
                    let position = keys.next;
                    let error = session.decrypt(&message_id, &message, keys).expect_err(&label);
                    keys.next = position;
                    assert_eq!(error_name(&error), text(expected), "{name}: receive {label}: {error}");
                    assert_eq!(
                        serde_json::to_string(&*session).unwrap(),
                        before,
                        "{name} {label}: state changed"
                    );
                    refusals += 1;
                }
            }
        }
        assert!(sends >= 4, "{name}");
        if name.contains("replay") {
            assert!(refusals >= 4, "{name}: refusals checked");
        }
    }
}

#[test]
fn content_encodings() {
    let vectors = vectors();
    let mut kinds = std::collections::BTreeSet::new();
    for case in cases(&vectors, "content") {
        let name = text(&case["name"]);
        let content = Content::decode(&bytes(&case["encoding"])).unwrap();
        assert_eq!(u64::from(content.kind()), case["kind"].as_u64().unwrap(), "{name}");
        assert_eq!(*content.encode().unwrap(), bytes(&case["encoding"]), "{name}");
        if let Content::Message(body) = &content {
            assert_eq!(**body, bytes(&case["body"]), "{name}");
        }
        if let Content::Attachment { caption, attachment } = &content {
            assert_eq!(
                &**caption,
                "Photo of the rash, taken this morning.".as_bytes(),
                "{name}"
            );
            assert_eq!(attachment.file_len, 1_234_567, "{name}");
            assert_eq!(attachment.media_type, "image/jpeg", "{name}");
            assert_eq!(attachment.file_name, "rash-2026-12-03.jpg", "{name}");
        }
        kinds.insert(content.kind());
    }
    assert_eq!(
        kinds,
        std::collections::BTreeSet::from([1, 2, 3, 4]),
        "every content kind has a vector"
    );
}

#[test]
fn archive_copies() {
    let vectors = vectors();
    for case in cases(&vectors, "archive") {
        let name = text(&case["name"]);
        let key = HistoryKey::from_bytes(text(&case["history_key_id"]).to_owned(), &b32(&case["history_key"])).unwrap();
        let context = ArchiveContext {
            owner_user_id: text(&case["owner_user_id"]),
            message_id: text(&case["message_id"]),
            sender_user_id: text(&case["sender_user_id"]),
            sender_device_id: text(&case["sender_device_id"]),
            recipient_user_id: text(&case["recipient_user_id"]),
        };
        let content = Content::decode(&bytes(&case["plaintext"])).unwrap();
        let nonce: [u8; 12] = bytes(&case["nonce"]).try_into().unwrap();
        let copy = ArchiveCopy::seal_with(&key, &context, &content, &nonce).unwrap();
        assert_eq!(copy.ciphertext, bytes(&case["ciphertext"]), "{name}: ciphertext");
        let ring = HistoryKeyRing::from_keys(vec![key]).unwrap();
        assert_eq!(copy.open(&ring, &context).unwrap(), content, "{name}: open");
        // Bound to its owner: another user's archive cannot take it.
        let moved = ArchiveContext {
            owner_user_id: context.recipient_user_id,
            ..context
        };
        if moved.owner_user_id != context.owner_user_id {
            assert_eq!(
                copy.open(&ring, &moved),
                Err(CryptoError::DecryptionFailed),
                "{name}: moved"
            );
        }
    }
}

#[test]
fn provisioning_messages() {
    let vectors = vectors();
    for case in cases(&vectors, "provisioning") {
        let name = text(&case["name"]);
        let user_id = text(&case["user_id"]);
        let device_id = text(&case["device_id"]);
        let secret: [u8; 10] = bytes(&case["link_secret"]).try_into().unwrap();
        let request =
            LinkRequest::with(user_id, device_id.to_owned(), &b32(&case["new_device_secret"]), &secret).unwrap();
        assert_eq!(request.code(), text(&case["code"]), "{name}: code");
        assert_eq!(request.ephemeral_public(), b32(&case["new_device_public"]), "{name}: E");
        assert_eq!(
            request.commitment().unwrap(),
            b32(&case["commitment"]),
            "{name}: commitment"
        );

        let history = case["history_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| HistoryKey::from_bytes(text(&key["history_key_id"]).to_owned(), &b32(&key["key"])).unwrap())
            .collect();
        let provisioning = Provisioning {
            identity: identity(case, ""),
            history: HistoryKeyRing::from_keys(history).unwrap(),
            approver_device_id: text(&case["approver_device_id"]).to_owned(),
        };
        assert_eq!(
            *provisioning.encode().unwrap(),
            bytes(&case["plaintext"]),
            "{name}: plaintext"
        );

        let pending = PendingLink {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            ephemeral_public: request.ephemeral_public(),
            commitment: request.commitment().unwrap(),
        };
        let code = text(&case["code"]);
        let sealed = pending
            .seal_with(code, &provisioning, &b32(&case["approver_secret"]))
            .unwrap();
        assert_eq!(sealed.approver_public, b32(&case["approver_public"]), "{name}: E2");
        assert_eq!(sealed.sealed, bytes(&case["sealed"]), "{name}: sealed");

        let opened = request.open(&sealed).unwrap();
        assert_eq!(
            opened.identity.public(),
            provisioning.identity.public(),
            "{name}: identity"
        );
        assert_eq!(opened.history, provisioning.history, "{name}: history keys");
        // Typed in lowercase without hyphens, the code still matches; a wrong code does not.
        assert!(pending.matches(&code.replace('-', "").to_lowercase()));
        let mut wrong = code.to_owned();
        wrong.replace_range(0..1, if code.starts_with('0') { "1" } else { "0" });
        assert!(!pending.matches(&wrong), "{name}: wrong code");
        assert_eq!(
            pending.seal_with(&wrong, &provisioning, &[1; 32]).unwrap_err(),
            CryptoError::LinkCodeMismatch
        );
        // A server that substitutes the new device's key cannot make the code match.
        let substituted = PendingLink {
            ephemeral_public: x25519_public(&[5; 32]),
            ..pending.clone()
        };
        assert!(!substituted.matches(code), "{name}: substituted key");
    }
}

//! Attachment known-answer tests: `docs/vectors/attachment-v1.json`, made by the independent Python
//! implementation `tools/vectorgen/attachment.py` from `docs/protocol.md` §13. Each case is sealed
//! here from its key, id and file and must give the same blob (the digest, and the bytes where the
//! file holds them); the blob must open back to the file, fed in odd-sized pieces.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use caremesh_crypto::attachment::{self, AttachmentKey, Opener};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors/attachment-v1.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().unwrap()).unwrap()
}

#[test]
fn the_independent_vectors_seal_and_open_identically() {
    let vectors = vectors();
    assert_eq!(vectors["format"], "caremesh-attachment-v1");
    assert_eq!(vectors["chunk_len"].as_u64().unwrap(), attachment::CHUNK_LEN as u64);
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let key = AttachmentKey::from_bytes(&hex(&case["key"])).unwrap();
        let id: [u8; 16] = hex(&case["attachment_id"]).try_into().unwrap();
        let len = usize::try_from(case["plaintext_len"].as_u64().unwrap()).unwrap();
        let file: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();

        let (blob, sealed) = attachment::seal_all(&key, &id, &file).unwrap();
        assert_eq!(sealed.digest.to_vec(), hex(&case["digest"]), "{name}: digest");
        assert_eq!(
            blob.len() as u64,
            case["blob_len"].as_u64().unwrap(),
            "{name}: blob length"
        );
        if let Some(expected) = case.get("blob") {
            assert_eq!(blob, hex(expected), "{name}: blob");
        } else {
            assert_eq!(blob[..64].to_vec(), hex(&case["blob_head"]), "{name}: head");
            assert_eq!(
                blob[blob.len() - 64..].to_vec(),
                hex(&case["blob_tail"]),
                "{name}: tail"
            );
        }

        let mut opener = Opener::new(&key, &id, &sealed.digest).unwrap();
        let mut opened = Vec::new();
        for piece in blob.chunks(70_001) {
            opened.extend_from_slice(&opener.update(piece).unwrap());
        }
        opened.extend_from_slice(&opener.finish().unwrap());
        assert_eq!(opened, file, "{name}: opens to the file");
    }
}

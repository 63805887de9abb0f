//! Shared test helpers: a process-wide authority and byte-level access to the documented
//! user-key layout (what an attacker holding key bytes works with).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::OnceLock;

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{MasterKey, PublicParams, UserKey, keygen, setup};

pub fn authority() -> &'static (PublicParams, MasterKey) {
    static AUTHORITY: OnceLock<(PublicParams, MasterKey)> = OnceLock::new();
    AUTHORITY.get_or_init(|| setup(&mut OsRng))
}

pub fn key_for(attributes: &[&str]) -> UserKey {
    let (pp, msk) = authority();
    keygen(pp, msk, attributes, &mut OsRng).unwrap()
}

/// The components of a serialized user key (layout documented on `UserKey::to_bytes`).
#[derive(Clone, Debug)]
pub struct KeyParts {
    pub attributes: Vec<String>,
    pub sk0: [[u8; 96]; 3],
    pub sk_prime: [[u8; 48]; 3],
    /// One triple per attribute, aligned with `attributes`.
    pub parts: Vec<[[u8; 48]; 3]>,
}

pub fn split_key(bytes: &[u8]) -> KeyParts {
    assert_eq!(&bytes[..2], &[1, 3], "version 1, type user key");
    let count = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    let mut pos = 4;
    let mut attributes = Vec::new();
    for _ in 0..count {
        let len = usize::from(bytes[pos]);
        attributes.push(String::from_utf8(bytes[pos + 1..pos + 1 + len].to_vec()).unwrap());
        pos += 1 + len;
    }
    let mut take = |n: usize| {
        let out = bytes[pos..pos + n].to_vec();
        pos += n;
        out
    };
    let sk0 = [0, 1, 2].map(|_| <[u8; 96]>::try_from(take(96)).unwrap());
    let sk_prime = [0, 1, 2].map(|_| <[u8; 48]>::try_from(take(48)).unwrap());
    let parts = (0..count)
        .map(|_| [0, 1, 2].map(|_| <[u8; 48]>::try_from(take(48)).unwrap()))
        .collect();
    KeyParts {
        attributes,
        sk0,
        sk_prime,
        parts,
    }
}

/// Serializes key parts (sorting attributes, as the canonical format requires).
pub fn join_key(key: &KeyParts) -> Vec<u8> {
    let mut entries: Vec<(String, [[u8; 48]; 3])> =
        key.attributes.iter().cloned().zip(key.parts.iter().copied()).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = vec![1u8, 3];
    out.extend_from_slice(&u16::try_from(entries.len()).unwrap().to_be_bytes());
    for (name, _) in &entries {
        out.push(u8::try_from(name.len()).unwrap());
        out.extend_from_slice(name.as_bytes());
    }
    for p in &key.sk0 {
        out.extend_from_slice(p);
    }
    for p in &key.sk_prime {
        out.extend_from_slice(p);
    }
    for (_, triple) in &entries {
        for p in triple {
            out.extend_from_slice(p);
        }
    }
    out
}

impl KeyParts {
    pub fn part(&self, attribute: &str) -> [[u8; 48]; 3] {
        let i = self.attributes.iter().position(|a| a == attribute).unwrap();
        self.parts[i]
    }
}

//! C2SP tlog-checkpoint bodies in C2SP signed notes, signed with Ed25519.
//!
//! A checkpoint body is `<origin>\n<tree size>\n<base64 root hash>\n` (plus optional extension
//! lines). A signed note is the body, a blank line, and one line per signature:
//! `— <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>`. The key hash is the first
//! four bytes of `SHA-256(<key name> || 0x0A || 0x01 || <32-byte public key>)`; a verifier key is
//! written `<key name>+<8 hex digits of key hash>+<base64(0x01 || public key)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::Hash;

/// The signature algorithm byte of Ed25519 in C2SP signed notes.
const ALG_ED25519: u8 = 0x01;
/// The em dash that starts every signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Notes larger than this are refused unread.
pub const MAX_NOTE_LEN: usize = 64 * 1024;
/// At most this many signature lines are looked at.
pub const MAX_SIGNATURES: usize = 100;

/// Why a note or checkpoint was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the note is malformed: {0}")]
    Malformed(&'static str),
    #[error("the checkpoint body is malformed: {0}")]
    BadCheckpoint(&'static str),
    #[error("the verifier key is malformed: {0}")]
    BadVerifierKey(&'static str),
    #[error("the key name is not allowed (it must be non-empty, without spaces or '+')")]
    BadKeyName,
    #[error("the note carries no valid signature by key {0}")]
    NoValidSignature(String),
    #[error("the checkpoint's origin is {found:?}, expected {expected:?}")]
    WrongOrigin { expected: String, found: String },
}

/// The content of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines after the root hash (without their newlines).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note body: `<origin>\n<size>\n<base64 root>\n` and any extension lines.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Parses a checkpoint body (the text before the blank line of a signed note).
    pub fn parse_body(body: &str) -> Result<Self, NoteError> {
        let text = body
            .strip_suffix('\n')
            .ok_or(NoteError::BadCheckpoint("the body must end with a newline"))?;
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|line| !line.is_empty())
            .ok_or(NoteError::BadCheckpoint("the origin line is empty"))?;
        let size_line = lines
            .next()
            .ok_or(NoteError::BadCheckpoint("the tree size line is missing"))?;
        let canonical = !size_line.is_empty()
            && size_line.bytes().all(|b| b.is_ascii_digit())
            && (size_line == "0" || !size_line.starts_with('0'));
        if !canonical {
            return Err(NoteError::BadCheckpoint(
                "the tree size is not a canonical decimal number",
            ));
        }
        let size = size_line
            .parse::<u64>()
            .map_err(|_| NoteError::BadCheckpoint("the tree size does not fit 64 bits"))?;
        let root_line = lines
            .next()
            .ok_or(NoteError::BadCheckpoint("the root hash line is missing"))?;
        let root: Hash = STANDARD
            .decode(root_line)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(NoteError::BadCheckpoint("the root hash is not 32 bytes of base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(NoteError::BadCheckpoint("extension lines must not be empty"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
        Err(NoteError::BadKeyName)
    } else {
        Ok(())
    }
}

/// The C2SP key hash of an Ed25519 key: the first four bytes of
/// `SHA-256(name || 0x0A || 0x01 || public key)`.
pub fn key_hash(name: &str, public_key: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ALG_ED25519]);
    hasher.update(public_key.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    let [a, b, c, d, ..] = digest;
    [a, b, c, d]
}

/// A checkpoint signer: a key name and an Ed25519 signing key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    pub fn new(name: impl Into<String>, key: SigningKey) -> Result<Self, NoteError> {
        let name = name.into();
        check_name(&name)?;
        Ok(Self { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The complete signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&key_hash(&self.name, &self.key.verifying_key()));
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n{SIGNATURE_PREFIX}{} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// A checkpoint verifier: a key name and an Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl NoteVerifier {
    pub fn new(name: impl Into<String>, public_key: &[u8]) -> Result<Self, NoteError> {
        let name = name.into();
        check_name(&name)?;
        let bytes: [u8; 32] = public_key
            .try_into()
            .map_err(|_| NoteError::BadVerifierKey("an Ed25519 public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| NoteError::BadVerifierKey("not a valid Ed25519 public key"))?;
        Ok(Self { name, key })
    }

    /// Parses `<name>+<hex key hash>+<base64(0x01 || public key)>`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(hash_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadVerifierKey("expected <name>+<key hash>+<key>"));
        };
        let key_bytes = STANDARD
            .decode(key_b64)
            .map_err(|_| NoteError::BadVerifierKey("the key is not base64"))?;
        let Some((&alg, public_key)) = key_bytes.split_first() else {
            return Err(NoteError::BadVerifierKey("the key is empty"));
        };
        if alg != ALG_ED25519 {
            return Err(NoteError::BadVerifierKey(
                "only Ed25519 keys (algorithm 0x01) are supported",
            ));
        }
        let verifier = Self::new(name, public_key)?;
        let expected = hex::decode(hash_hex).map_err(|_| NoteError::BadVerifierKey("the key hash is not hex"))?;
        if expected.as_slice() != verifier.key_hash().as_slice() {
            return Err(NoteError::BadVerifierKey(
                "the key hash does not match the name and key",
            ));
        }
        Ok(verifier)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn key_hash(&self) -> [u8; 4] {
        key_hash(&self.name, &self.key)
    }

    /// The verifier key string `<name>+<hex key hash>+<base64(0x01 || public key)>`.
    pub fn to_text(&self) -> String {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_hash()),
            STANDARD.encode(key)
        )
    }

    /// Checks `note` carries a valid signature by this key and returns its body.
    pub fn open_note<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (body, signatures) = split_note(note)?;
        let hash = self.key_hash();
        for line in signatures.iter().take(MAX_SIGNATURES) {
            let Some((name, blob)) = line
                .strip_prefix(SIGNATURE_PREFIX)
                .and_then(|rest| rest.split_once(' '))
            else {
                return Err(NoteError::Malformed("a signature line is not `— <name> <base64>`"));
            };
            if name != self.name {
                continue;
            }
            let Ok(blob) = STANDARD.decode(blob) else {
                return Err(NoteError::Malformed("a signature is not base64"));
            };
            let Some((line_hash, signature)) = blob.split_at_checked(4) else {
                continue;
            };
            if line_hash != hash.as_slice() {
                continue;
            }
            let Ok(signature) = Signature::from_slice(signature) else {
                continue;
            };
            if self.key.verify_strict(body.as_bytes(), &signature).is_ok() {
                return Ok(body);
            }
        }
        Err(NoteError::NoValidSignature(self.name.clone()))
    }

    /// Checks the signature on a signed checkpoint and parses it; `origin`, when given, must match.
    pub fn open_checkpoint(&self, note: &str, origin: Option<&str>) -> Result<Checkpoint, NoteError> {
        let body = self.open_note(note)?;
        let checkpoint = Checkpoint::parse_body(body)?;
        if let Some(expected) = origin
            && checkpoint.origin != expected
        {
            return Err(NoteError::WrongOrigin {
                expected: expected.to_owned(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

/// Splits a signed note into its body (with its final newline) and its signature lines.
fn split_note(note: &str) -> Result<(&str, Vec<&str>), NoteError> {
    if note.len() > MAX_NOTE_LEN {
        return Err(NoteError::Malformed("the note is too large"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("there is no blank line before the signatures"))?;
    let body = note
        .get(..=split)
        .ok_or(NoteError::Malformed("there is no blank line before the signatures"))?;
    let rest = note
        .get(split + 2..)
        .ok_or(NoteError::Malformed("there are no signatures"))?;
    let rest = rest
        .strip_suffix('\n')
        .ok_or(NoteError::Malformed("the note must end with a newline"))?;
    if rest.is_empty() {
        return Err(NoteError::Malformed("there are no signatures"));
    }
    Ok((body, rest.split('\n').collect()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    fn signer(name: &str, seed: u8) -> NoteSigner {
        NoteSigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    fn random_bytes(n: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; n];
        getrandom::fill(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn signs_and_verifies_a_checkpoint() {
        let signer = signer("caremesh.local/audit", 7);
        let checkpoint = Checkpoint::new("caremesh.local/audit", 12345, [9u8; 32]);
        let note = signer.sign(&checkpoint);
        assert!(note.starts_with("caremesh.local/audit\n12345\n"));
        assert!(note.contains("\n\n\u{2014} caremesh.local/audit "));
        let verifier = NoteVerifier::parse(&signer.verifier().to_text()).unwrap();
        assert_eq!(verifier, signer.verifier());
        let opened = verifier.open_checkpoint(&note, Some("caremesh.local/audit")).unwrap();
        assert_eq!(opened, checkpoint);
        assert!(matches!(
            verifier.open_checkpoint(&note, Some("other")),
            Err(NoteError::WrongOrigin { .. })
        ));
    }

    #[test]
    fn key_hash_follows_the_signed_note_spec() {
        // SHA-256("name" || "\n" || 0x01 || key)[..4], computed independently.
        let signer = signer("example.com/log", 1);
        let public = signer.verifier().public_key();
        let mut input = b"example.com/log\n\x01".to_vec();
        input.extend_from_slice(&public);
        let digest = Sha256::digest(&input);
        assert_eq!(signer.verifier().key_hash(), digest[..4]);
        let text = signer.verifier().to_text();
        assert!(text.starts_with(&format!("example.com/log+{}+", hex::encode(&digest[..4]))));
    }

    #[test]
    fn altered_notes_are_refused() {
        let signer = signer("log", 3);
        let verifier = signer.verifier();
        let note = signer.sign(&Checkpoint::new("log", 10, [1u8; 32]));
        let tampered = note.replacen("\n10\n", "\n11\n", 1);
        assert!(matches!(
            verifier.open_note(&tampered),
            Err(NoteError::NoValidSignature(_))
        ));
        let other = self::signer("log", 4).verifier();
        assert!(other.open_note(&note).is_err());
        let renamed = NoteVerifier::new("other", &verifier.public_key()).unwrap();
        assert!(renamed.open_note(&note).is_err());
        // Extra signatures by unknown keys are ignored.
        let cosigned = format!("{note}\u{2014} witness AAAA\n");
        assert!(verifier.open_note(&cosigned).is_ok());
    }

    #[test]
    fn parses_only_canonical_bodies() {
        let root = STANDARD.encode([0u8; 32]);
        assert!(Checkpoint::parse_body(&format!("o\n5\n{root}\n")).is_ok());
        assert!(Checkpoint::parse_body(&format!("o\n5\n{root}\next\n")).is_ok());
        for bad in [
            format!("o\n05\n{root}\n"),
            format!("o\n-5\n{root}\n"),
            format!("o\n5\n{root}"),
            format!("\n5\n{root}\n"),
            "o\n5\nAAAA\n".to_owned(),
            format!("o\n99999999999999999999\n{root}\n"),
            "o\n5\n".to_owned(),
            String::new(),
        ] {
            assert!(Checkpoint::parse_body(&bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a+b", "a+00000000+AA==", "name+zz+AQ==", "+00+AQ=="] {
            assert!(NoteVerifier::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let verifier = signer("log", 5).verifier();
        let note = signer("log", 5).sign(&Checkpoint::new("log", 3, [2u8; 32]));
        for round in 0..3000 {
            let text = if round % 2 == 0 {
                String::from_utf8_lossy(&random_bytes(round % 300)).into_owned()
            } else {
                // Mutate a valid note at a random byte.
                let mut bytes = note.clone().into_bytes();
                let at = random_bytes(2);
                let i = (usize::from(at[0]) * 7 + round) % bytes.len();
                bytes[i] = at[1];
                String::from_utf8_lossy(&bytes).into_owned()
            };
            let _ = verifier.open_checkpoint(&text, None);
            let _ = Checkpoint::parse_body(&text);
            let _ = NoteVerifier::parse(&text);
        }
    }
}

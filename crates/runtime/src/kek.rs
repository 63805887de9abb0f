//! The key-encryption key (DESIGN.md §3.6): secrets at rest (the ABE master key, token and
//! checkpoint signing keys, TOTP secrets) are sealed under it with AES-256-GCM before they reach
//! a database. Operators supply the key as a file (a Kubernetes Secret in production);
//! `caremesh up` generates one into `./data` for development.
//!
//! Sealed format: `0x01 || nonce (12) || ciphertext+tag`, with associated data naming the purpose
//! (e.g. `auth/totp-secret/<user id>`), so a sealed value cannot be moved to another slot.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const AAD_PREFIX: &[u8] = b"caremesh-kek-v1:";

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("cannot read the key-encryption key {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write the key-encryption key {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the key-encryption key {path} is malformed: expected 64 hex characters (32 bytes)")]
    Malformed { path: PathBuf },
    #[error("sealed value is malformed or was sealed for another purpose or key")]
    Open,
    #[error("cannot gather randomness: {0}")]
    Random(String),
}

/// The key-encryption key. Its bytes are wiped from memory when it is dropped.
pub struct Kek {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    pub fn from_bytes(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&(*key).into()),
        }
    }

    /// Reads the key from `path` (64 hex characters).
    pub fn load(path: &Path) -> Result<Self, KekError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| KekError::Read {
            path: path.to_owned(),
            source,
        })?);
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| KekError::Malformed { path: path.to_owned() })?;
        Ok(Self::from_bytes(&key))
    }

    /// Loads the key, generating it first (mode 0600, written atomically) if the file is missing.
    /// Returns whether it was created. For development layouts only; production supplies the file.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), KekError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|error| KekError::Random(error.to_string()))?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_ref())));
        write_private(path, text.as_bytes()).map_err(|source| KekError::Write {
            path: path.to_owned(),
            source,
        })?;
        Ok((Self::from_bytes(&key), true))
    }

    /// Seals `plaintext` for `purpose`.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|error| KekError::Random(error.to_string()))?;
        let aad = aad(purpose);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KekError::Open)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens a value sealed for `purpose`; fails on any change to it, the purpose or the key.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KekError> {
        let (&version, rest) = sealed.split_first().ok_or(KekError::Open)?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return Err(KekError::Open);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| KekError::Open)?;
        let aad = aad(purpose);
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KekError::Open)
    }
}

fn aad(purpose: &str) -> Vec<u8> {
    [AAD_PREFIX, purpose.as_bytes()].concat()
}

/// Writes a file readable only by its owner: a temporary file in the same directory, then a rename,
/// so a crash never leaves a half-written secret behind.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_purpose_and_key() {
        let kek = Kek::from_bytes(&[7; 32]);
        let sealed = kek.seal("auth/totp/u1", b"JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(
            kek.open("auth/totp/u1", &sealed).unwrap().as_slice(),
            b"JBSWY3DPEHPK3PXP"
        );
        assert!(kek.open("auth/totp/u2", &sealed).is_err(), "moved to another slot");
        assert!(
            Kek::from_bytes(&[8; 32]).open("auth/totp/u1", &sealed).is_err(),
            "another key"
        );
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert!(kek.open("auth/totp/u1", &tampered).is_err(), "flipped byte {i}");
        }
        assert!(kek.open("auth/totp/u1", &sealed[..5]).is_err());
        assert!(kek.open("auth/totp/u1", &[]).is_err());
    }

    #[test]
    fn generated_key_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        let (kek, created) = Kek::load_or_generate(&path).unwrap();
        assert!(created);
        let sealed = kek.seal("p", b"x").unwrap();
        let (again, created) = Kek::load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(again.open("p", &sealed).unwrap().as_slice(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn a_malformed_key_file_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek.key");
        std::fs::write(&path, "not-a-key-but-a-secret").unwrap();
        let error = Kek::load(&path).unwrap_err().to_string();
        assert!(error.contains("64 hex characters"));
        assert!(!error.contains("not-a-key-but-a-secret"));
    }
}

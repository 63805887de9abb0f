//! Random secrets handed to clients (refresh tokens, login challenges, recovery codes) and how
//! they are stored: only their SHA-256, so a database leak does not leak usable secrets.

use caremesh_runtime::Error;
use sha2::{Digest, Sha256};

/// `prefix` followed by 32 random bytes in base64url.
pub fn random_token(prefix: &str) -> Result<String, Error> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    fill(bytes.as_mut())?;
    Ok(format!(
        "{prefix}{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes.as_ref())
    ))
}

pub fn fill(bytes: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(bytes).map_err(|error| Error::internal("gathering randomness", error.to_string()))
}

/// The stored form of a client-held secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A recovery code: 12 base32 characters (60 bits) in groups of four, e.g. `k3mq-7zpa-b2xd`.
pub fn recovery_code() -> Result<String, Error> {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 12];
    fill(&mut bytes)?;
    let chars: Vec<char> = bytes
        .iter()
        .map(|byte| char::from(ALPHABET.get(usize::from(byte % 32)).copied().unwrap_or(b'a')))
        .collect();
    Ok(chars
        .chunks(4)
        .map(|chunk| chunk.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

/// Recovery codes are hashed with the user id, so equal codes of two users differ at rest.
pub fn recovery_code_digest(user_id: &str, code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    digest(&format!("{user_id}:{normalized}"))
}

/// A random password for accounts an admin creates without one (20 characters).
pub fn initial_password() -> Result<String, Error> {
    let code = recovery_code()?;
    let more = recovery_code()?;
    Ok(format!("{code}-{}", more.get(..4).unwrap_or("x7k2")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_look_right_and_hash_per_user() {
        let code = recovery_code().unwrap();
        assert_eq!(code.len(), 14);
        assert_eq!(code.matches('-').count(), 2);
        assert_ne!(recovery_code_digest("u1", &code), recovery_code_digest("u2", &code));
        assert_eq!(
            recovery_code_digest("u1", &code),
            recovery_code_digest("u1", &code.to_uppercase().replace('-', " "))
        );
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let (a, b) = (random_token("cmr1_").unwrap(), random_token("cmr1_").unwrap());
        assert!(a.starts_with("cmr1_") && a.len() > 40);
        assert_ne!(a, b);
    }
}

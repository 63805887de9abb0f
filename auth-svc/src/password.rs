//! Passwords: Argon2id at or above OWASP's minimum, parameters stored in the PHC string so they
//! can be raised later (a login rehashes with the current ones), and a strength policy after
//! NIST SP 800-63B: length 12 to 128, no composition rules, a zxcvbn check that also refuses
//! passwords built from the username, and a message that says why.

use std::sync::Mutex;

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use caremesh_runtime::Error;
use subtle::ConstantTimeEq;

pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 128;

/// Argon2id cost. OWASP's minimum is m = 19 MiB, t = 2, p = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl HashCost {
    pub const OWASP_MINIMUM: HashCost = HashCost {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    fn hasher(self) -> Result<Argon2<'static>, Error> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|error| Error::internal("building Argon2 parameters", error.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes `password` to a PHC string (`$argon2id$v=19$m=...`). CPU-heavy: call off the async
/// threads.
pub fn hash(password: &str, cost: HashCost) -> Result<String, Error> {
    cost.hasher()?
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| Error::internal("hashing a password", error.to_string()))
}

/// Whether `password` matches the PHC string `stored` (with the parameters stored there).
pub fn verify(password: &str, stored: &str) -> bool {
    MemoryPool::default().verify(password, stored)
}

/// Argon2's working memory (one 1 KiB block per KiB of cost), kept between checks. Allocating and
/// faulting in 19 MiB for every check costs about as much as the hash itself on a worker thread
/// (measured: 21 ms against 12 ms), so logins reuse it. At most `MAX_POOLED` buffers are kept.
#[derive(Debug, Default)]
pub struct MemoryPool {
    free: Mutex<Vec<Vec<Block>>>,
}

const MAX_POOLED: usize = 8;

impl MemoryPool {
    fn take(&self, blocks: usize) -> Vec<Block> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .filter(|memory| memory.len() == blocks);
        reused.unwrap_or_else(|| vec![Block::default(); blocks])
    }

    fn give(&self, memory: Vec<Block>) {
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if free.len() < MAX_POOLED {
            free.push(memory);
        }
    }

    /// Whether `password` matches the PHC string `stored`, compared in constant time.
    pub fn verify(&self, password: &str, stored: &str) -> bool {
        let Ok(hash) = PasswordHash::new(stored) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
            return false;
        };
        let (Ok(params), Ok(algorithm)) = (Params::try_from(&hash), Algorithm::try_from(hash.algorithm.as_str()))
        else {
            return false;
        };
        let Ok(version) = hash.version.map_or(Ok(Version::V0x13), Version::try_from) else {
            return false;
        };
        let mut memory = self.take(params.block_count());
        let mut output = zeroize::Zeroizing::new(vec![0u8; expected.as_bytes().len()]);
        let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            output.as_mut_slice(),
            &mut memory,
        );
        self.give(memory);
        computed.is_ok() && bool::from(output.as_slice().ct_eq(expected.as_bytes()))
    }
}

/// Whether `stored` was hashed with less than `cost` (or another algorithm) and should be redone.
pub fn needs_rehash(stored: &str, cost: HashCost) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return true;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return true;
    };
    hash.algorithm.as_str() != "argon2id"
        || params.m_cost() < cost.memory_kib
        || params.t_cost() < cost.iterations
        || params.p_cost() < cost.parallelism
}

/// A hash of a random password with `cost`: verifying against it costs what a real check costs,
/// so unknown usernames take as long as wrong passwords.
pub fn decoy_hash(cost: HashCost) -> Result<String, Error> {
    let mut random = [0u8; 24];
    getrandom::fill(&mut random).map_err(|error| Error::internal("gathering randomness", error.to_string()))?;
    hash(&hex::encode(random), cost)
}

/// Refuses weak passwords with a reason the user can act on.
pub fn check_strength(password: &str, username: &str, display_name: &str) -> Result<(), Error> {
    let weak = |message: String| Err(Error::invalid_argument("WEAK_PASSWORD", message));
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return weak(format!(
            "the password must be at least {MIN_LENGTH} characters long (it has {length})"
        ));
    }
    if length > MAX_LENGTH {
        return weak(format!("the password must be at most {MAX_LENGTH} characters long"));
    }
    let lowered = password.to_lowercase();
    let username = username.to_lowercase();
    if username.len() >= 3 && lowered.contains(&username) {
        return weak("the password must not contain the username".to_owned());
    }
    let entropy = zxcvbn::zxcvbn(password, &[&username, display_name]);
    if (entropy.score() as u8) < 3 {
        let mut message = "the password is too easy to guess".to_owned();
        if let Some(feedback) = entropy.feedback() {
            if let Some(warning) = feedback.warning() {
                message = format!("{message}: {warning}");
            }
            for suggestion in feedback.suggestions() {
                message = format!("{message}. {suggestion}");
            }
        }
        return weak(format!("{message}. A few unrelated words make a strong password."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashCost = HashCost {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn hashes_verify_and_carry_their_parameters() {
        let stored = hash("correct horse battery staple", HashCost::OWASP_MINIMUM).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(verify("correct horse battery staple", &stored));
        assert!(!verify("correct horse battery stapler", &stored));
        assert!(!needs_rehash(&stored, HashCost::OWASP_MINIMUM));
        let weak = hash("correct horse battery staple", CHEAP).unwrap();
        assert!(needs_rehash(&weak, HashCost::OWASP_MINIMUM), "raised cost means rehash");
        assert!(!verify("x", "not a phc string"));
    }

    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        let reason = |password: &str| {
            check_strength(password, "dr.house", "Gregory House")
                .unwrap_err()
                .message()
                .to_owned()
        };
        assert!(reason("short").contains("at least 12"));
        assert!(reason("password1234").contains("too easy to guess"));
        assert!(reason("Dr.House-2024!!").contains("username"));
        assert!(reason(&"x".repeat(129)).contains("at most 128"));
        assert!(check_strength("vellum orbit cactus lantern", "dr.house", "Gregory House").is_ok());
        let long = "vellum orbit cactus lantern ".repeat(2);
        assert!(
            check_strength(long.trim(), "dr.house", "Gregory House").is_ok(),
            "64+ characters accepted"
        );
    }
}

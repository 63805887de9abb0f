//! Passwords: Argon2id at or above OWASP's minimum, parameters stored in the PHC string so they
//! can be raised later (a login rehashes with the current ones), and a strength policy after
//! NIST SP 800-63B: length 12 to 128, no composition rules, a zxcvbn check that also refuses
//! passwords built from the username, and a message that says why.
//!
//! Every hash and check in the service goes through one [`Hashing`] queue: at most N at once (N
//! working memories of the Argon2 cost each, reused), callers served first come, first served,
//! and refused with RESOURCE_EXHAUSTED when too many are already waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use caremesh_runtime::Error;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

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

    fn params(self) -> Result<Params, Error> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|error| Error::internal("building Argon2 parameters", error.to_string()))
    }
}

/// Hashes `password` to a PHC string (`$argon2id$v=19$m=...`). CPU-heavy: call off the async
/// threads.
pub fn hash(password: &str, cost: HashCost) -> Result<String, Error> {
    MemoryPool::default().hash(password, cost)
}

/// Whether `password` matches the PHC string `stored` (with the parameters stored there).
pub fn verify(password: &str, stored: &str) -> bool {
    MemoryPool::default().verify(password, stored)
}

/// Argon2's working memory (one 1 KiB block per KiB of cost), kept between checks. Allocating and
/// faulting in 19 MiB for every check costs about as much as the hash itself on a worker thread
/// (measured: 21 ms against 12 ms), and memory freed on one of many blocking threads stays in that
/// thread's allocator arena, so hashes and checks reuse these buffers. At most `keep` buffers are
/// kept (the [`Hashing`] concurrency: one per hash that can run at once).
#[derive(Debug)]
pub struct MemoryPool {
    free: Mutex<Vec<Vec<Block>>>,
    keep: usize,
}

impl Default for MemoryPool {
    fn default() -> Self {
        Self::new(1)
    }
}

impl MemoryPool {
    /// A pool that keeps at most `keep` buffers.
    pub fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep: keep.max(1),
        }
    }

    fn take(&self, blocks: usize) -> Vec<Block> {
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match free.iter().position(|memory| memory.len() == blocks) {
            Some(found) => free.swap_remove(found),
            None => {
                drop(free);
                vec![Block::new(); blocks]
            }
        }
    }

    fn give(&self, memory: Vec<Block>) {
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if free.len() >= self.keep && !free.is_empty() {
            // Another cost's buffer (a hash made with older parameters): the newest cost wins.
            free.remove(0);
        }
        free.push(memory);
    }

    /// How many buffers the pool holds now.
    pub fn kept(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Hashes `password` with `cost` and a fresh random salt to a PHC string, in pooled memory.
    pub fn hash(&self, password: &str, cost: HashCost) -> Result<String, Error> {
        let params = cost.params()?;
        let mut salt = [0u8; Salt::RECOMMENDED_LENGTH];
        getrandom::fill(&mut salt).map_err(|error| Error::internal("gathering randomness", error.to_string()))?;
        let mut output = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
        let mut memory = self.take(params.block_count());
        let computed = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()).hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            output.as_mut_slice(),
            &mut memory,
        );
        self.give(memory);
        computed.map_err(|error| Error::internal("hashing a password", error.to_string()))?;
        let phc =
            |error: argon2::password_hash::phc::Error| Error::internal("encoding a password hash", error.to_string());
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params)
                .map_err(|error| Error::internal("encoding Argon2 parameters", error.to_string()))?,
            salt: Some(Salt::new(&salt).map_err(phc)?),
            hash: Some(Output::new(output.as_slice()).map_err(phc)?),
        };
        Ok(hash.to_string())
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
        let mut output = Zeroizing::new(vec![0u8; expected.as_bytes().len()]);
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

/// How long a refused caller is told to wait before trying again.
const QUEUE_FULL_RETRY: Duration = Duration::from_secs(3);

/// The message of a sign-in refused because the hashing queue is full.
pub const QUEUE_FULL_MESSAGE: &str = "too many sign-ins at once; try again in a few seconds";

/// The one queue every Argon2id hash and check of the service goes through (registrations,
/// logins, decoy checks for unknown usernames, password changes, rehashes). At most
/// `concurrency` run at once, each on a blocking thread with a working memory from the pool, so
/// the service holds at most `concurrency` × the cost in Argon2 memory and takes at most
/// `concurrency` blocking threads for it. Callers wait in arrival order (tokio's semaphore is
/// fair); when `queue` callers are already waiting, the next is refused with RESOURCE_EXHAUSTED
/// rather than queued without bound.
#[derive(Debug)]
pub struct Hashing {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    memory: Arc<MemoryPool>,
}

/// A place in the queue; leaving it (served, refused or cancelled) frees it.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hashing {
    /// At most `concurrency` (at least 1) hashes at once, at most `queue` callers waiting.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            queue,
            memory: Arc::new(MemoryPool::new(concurrency)),
        }
    }

    /// Callers waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Working memories the pool holds now (at most the concurrency).
    pub fn pooled(&self) -> usize {
        self.memory.kept()
    }

    /// Waits for a turn (first come, first served), or refuses when the queue is full. The turn
    /// is owned, so a caller that goes away does not free it before its hash has finished.
    async fn turn(&self) -> Result<OwnedSemaphorePermit, Error> {
        // A free permit means nobody is waiting (a fair semaphore hands released permits to
        // waiters first), so taking it does not jump the queue.
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(permit);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if ahead >= self.queue {
            return Err(Error::resource_exhausted(
                "TOO_MANY_SIGN_INS",
                QUEUE_FULL_MESSAGE,
                QUEUE_FULL_RETRY,
            ));
        }
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|error| Error::internal("waiting to hash a password", error))
    }

    /// Runs `work` with pooled memory on a blocking thread, in turn.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce(&MemoryPool) -> T + Send + 'static) -> Result<T, Error> {
        let permit = self.turn().await?;
        let memory = Arc::clone(&self.memory);
        tokio::task::spawn_blocking(move || {
            let result = work(&memory);
            drop(permit);
            result
        })
        .await
        .map_err(|error| Error::internal("hashing a password", error))
    }

    /// Hashes `password` with `cost` to a PHC string.
    pub async fn hash(&self, password: &str, cost: HashCost) -> Result<String, Error> {
        let password = Zeroizing::new(password.to_owned());
        self.run(move |memory| memory.hash(&password, cost)).await?
    }

    /// Whether `password` matches the PHC string `stored`.
    pub async fn verify(&self, password: &str, stored: String) -> Result<bool, Error> {
        let password = Zeroizing::new(password.to_owned());
        self.run(move |memory| memory.verify(&password, &stored)).await
    }

    /// A hash of a random password with `cost` (see [`decoy_hash`]).
    pub async fn decoy(&self, cost: HashCost) -> Result<String, Error> {
        let mut random = Zeroizing::new([0u8; 24]);
        getrandom::fill(random.as_mut()).map_err(|error| Error::internal("gathering randomness", error.to_string()))?;
        self.hash(&hex::encode(random.as_ref()), cost).await
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
    fn pooled_hashes_are_standard_phc_strings_and_reuse_one_memory() {
        use argon2::password_hash::PasswordVerifier;
        let pool = MemoryPool::new(1);
        let stored = pool.hash("correct horse battery staple", CHEAP).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{stored}");
        let parsed = PasswordHash::new(&stored).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery staple", &parsed)
                .is_ok(),
            "the argon2 crate's own verifier accepts it"
        );
        assert!(pool.verify("correct horse battery staple", &stored));
        assert!(!pool.verify("correct horse battery stapler", &stored));
        assert_ne!(
            stored,
            pool.hash("correct horse battery staple", CHEAP).unwrap(),
            "fresh salts"
        );
        assert_eq!(pool.kept(), 1, "one working memory, reused");
        let other = hash("correct horse battery staple", HashCost { iterations: 2, ..CHEAP }).unwrap();
        assert!(pool.verify("correct horse battery staple", &other));
        assert_eq!(pool.kept(), 1, "never more than it may keep");
    }

    async fn until(mut ready: impl FnMut() -> bool) {
        while !ready() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_with_resource_exhausted_and_the_others_are_served() {
        let hashing = Arc::new(Hashing::new(1, 1));
        let stored = hash("correct horse battery staple", CHEAP).unwrap();
        let busy = hashing.turn().await.unwrap();
        let queued = tokio::spawn({
            let hashing = Arc::clone(&hashing);
            let stored = stored.clone();
            async move { hashing.verify("correct horse battery staple", stored).await }
        });
        until(|| hashing.waiting() == 1).await;

        let refused = hashing
            .verify("correct horse battery staple", stored.clone())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), caremesh_runtime::error::ErrorCode::ResourceExhausted);
        assert_eq!(refused.message(), QUEUE_FULL_MESSAGE);
        assert!(refused.retry_after().is_some());
        assert!(
            hashing.hash("another password here", CHEAP).await.is_err(),
            "hashes wait in the same queue"
        );
        assert!(hashing.decoy(CHEAP).await.is_err(), "and so do decoys");
        assert_eq!(hashing.waiting(), 1, "refused callers leave no place behind");

        drop(busy);
        assert!(
            queued.await.unwrap().unwrap(),
            "the queued check ran once a turn was free"
        );
        assert_eq!(hashing.waiting(), 0);
        assert!(hashing.verify("correct horse battery staple", stored).await.unwrap());
        assert!(hashing.pooled() <= 1, "memory bounded by the concurrency");
    }

    #[tokio::test]
    async fn callers_are_served_first_come_first_served() {
        let hashing = Arc::new(Hashing::new(1, 16));
        let busy = hashing.turn().await.unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut callers = Vec::new();
        for caller in 0..8 {
            callers.push(tokio::spawn({
                let hashing = Arc::clone(&hashing);
                let served = Arc::clone(&served);
                async move {
                    let _turn = hashing.turn().await.unwrap();
                    served.lock().unwrap().push(caller);
                    tokio::task::yield_now().await;
                }
            }));
            // The next caller arrives only once this one waits in the queue.
            until(|| hashing.waiting() == caller + 1).await;
        }
        drop(busy);
        for caller in callers {
            caller.await.unwrap();
        }
        assert_eq!(*served.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_cancelled_caller_keeps_its_turn_until_its_hash_is_done() {
        let hashing = Arc::new(Hashing::new(1, 0));
        let started = Arc::new(std::sync::Barrier::new(2));
        let release = Arc::new(std::sync::Barrier::new(2));
        let running = tokio::spawn({
            let hashing = Arc::clone(&hashing);
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            async move {
                hashing
                    .run(move |_| {
                        started.wait();
                        release.wait();
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking({
            let started = Arc::clone(&started);
            move || started.wait()
        })
        .await
        .unwrap();
        running.abort();
        let _ = running.await;
        let refused = hashing.verify("x", "not a phc string".to_owned()).await.unwrap_err();
        assert_eq!(
            refused.reason(),
            "TOO_MANY_SIGN_INS",
            "the cancelled hash still holds its turn"
        );
        tokio::task::spawn_blocking(move || release.wait()).await.unwrap();
        until(|| hashing.permits.available_permits() == 1).await;
        assert!(!hashing.verify("x", "not a phc string".to_owned()).await.unwrap());
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

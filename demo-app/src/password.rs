//! Password hashing with argon2id, bounded in CPU and in memory.
//!
//! A hash takes tens of milliseconds of CPU and fills 19 MiB of memory, on
//! purpose. So hashes run on the blocking thread pool, never on the async
//! workers, and at most one per core at a time: unbounded, a burst of
//! registrations and logins would run one per blocking thread (up to 512),
//! gigabytes at once. And each permit owns one working memory, filled by
//! every hash that holds the permit: allocated afresh per hash, the
//! allocator kept most of it after the hash freed it (each blocking thread
//! gets an arena of its own), and 32 hashes left the process at 500 MiB.
//! Reused, the hashing memory of the process is at most one per core,
//! whatever the traffic.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::password_hash::try_generate_salt;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Hashes a password with argon2id (the default parameters) and a random
/// salt, off the async workers, and returns its PHC string.
pub async fn hash(password: String) -> Result<String, ApiError> {
    with_memory(move |memory| {
        let params = Params::default();
        let salt = try_generate_salt().map_err(|error| failed("cannot draw a salt", &error))?;
        let mut output = vec![0; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let blocks = memory.blocks(params.block_count());
        argon2
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut output, blocks)
            .map_err(|error| failed("cannot hash a password", &error))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|error| failed("cannot encode the parameters", &error))?,
            salt: Some(Salt::new(&salt).map_err(|error| failed("cannot encode the salt", &error))?),
            hash: Some(Output::new(&output).map_err(|error| failed("cannot encode the hash", &error))?),
        };
        Ok(phc.to_string())
    })
    .await?
}

/// Whether `password` matches the stored hash, off the async workers.
/// `None` (an unknown user) still costs one verification, so that a wrong
/// e-mail address cannot be told from a wrong password by the time it takes.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    with_memory(move |memory| {
        let stored_hash = stored.as_deref().unwrap_or(DUMMY_HASH);
        let Ok(hash) = PasswordHash::new(stored_hash) else {
            tracing::error!("a stored password hash is not a PHC string");
            return false;
        };
        matches(&hash, password.as_bytes(), memory) && stored.is_some()
    })
    .await
}

/// Whether `password` hashes to `hash`, with the parameters, salt and
/// version the hash names. The comparison of `Output`s takes constant time.
fn matches(hash: &PasswordHash, password: &[u8], memory: &mut Memory) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return false };
    let parts = Algorithm::try_from(hash.algorithm.as_str())
        .and_then(|algorithm| Ok((algorithm, Params::try_from(hash)?)))
        .and_then(|(algorithm, params)| {
            let version = hash.version.map_or(Ok(Version::default()), Version::try_from)?;
            Ok((algorithm, params, version))
        });
    let Ok((algorithm, params, version)) = parts else {
        tracing::error!("a stored password hash has parameters argon2 refuses");
        return false;
    };
    let mut output = vec![0; expected.len()];
    let blocks = memory.blocks(params.block_count());
    let argon2 = Argon2::new(algorithm, version, params);
    argon2.hash_password_into_with_memory(password, salt.as_ref(), &mut output, blocks).is_ok()
        && Output::new(&output).is_ok_and(|output| output == *expected)
}

/// The argon2id hash of a random password nobody knows, with the default
/// parameters.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$YWJjZGVmZ2hpamtsbW5vcA$0pNd6yVn6ZbPsXfJjV8wN3sG4Z5eXhB4yR9kMvUe2Ls";

fn failed(what: &str, error: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(%error, "{what}");
    ApiError::Internal
}

/// The working memory of one hash: argon2's blocks, kept between hashes.
pub struct Memory(Vec<Block>);

impl Memory {
    /// The first `count` blocks, grown if a stored hash asks for more
    /// memory than the default parameters.
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::new());
        }
        &mut self.0[..count]
    }
}

/// A permit to hash and the memory it owns, from [`with_memory`].
struct Workspace {
    memory: Option<Memory>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            pool().memories.lock().unwrap_or_else(PoisonError::into_inner).push(memory);
        }
    }
}

/// The permits (one per core the process may use) and the memories that
/// hashes not running now left behind, at most one per permit.
struct Pool {
    permits: Arc<Semaphore>,
    memories: Mutex<Vec<Memory>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Pool { permits: Arc::new(Semaphore::new(cores)), memories: Mutex::new(Vec::with_capacity(cores)) }
    })
}

/// Runs `work` on the blocking thread pool once a permit is free, with the
/// permit's memory. The others wait on the async side, costing nothing,
/// and hashing is CPU-bound, so more at once would not finish sooner. The
/// permit travels with the work: a request cancelled while its hash runs
/// holds it until the hash ends.
async fn with_memory<T: Send + 'static>(work: impl FnOnce(&mut Memory) -> T + Send + 'static) -> Result<T, ApiError> {
    let permit = pool().permits.clone().acquire_owned().await.map_err(|error| failed("no hashing permits", &error))?;
    let memory = pool().memories.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut workspace = Workspace { memory: Some(memory.unwrap_or(Memory(Vec::new()))), _permit: permit };
    tokio::task::spawn_blocking(move || {
        let result = workspace.memory.as_mut().map(work);
        drop(workspace);
        result
    })
    .await
    .map_err(|error| failed("password hashing task failed", &error))?
    .ok_or(ApiError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    #[tokio::test]
    async fn passwords_verify_only_against_their_hash() {
        let hash = hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!verify("wrong horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
        // The argon2 crate's own verifier agrees: the PHC string is standard.
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_verify() {
        use argon2::password_hash::PasswordHasher;
        let made = Argon2::default().hash_password(b"battery staple").unwrap().to_string();
        assert!(verify("battery staple".into(), Some(made.clone())).await.unwrap());
        assert!(!verify("battery".into(), Some(made)).await.unwrap());
    }

    #[test]
    fn the_dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}

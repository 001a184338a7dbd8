//! Reusable rayon thread pools for the tokenizers' batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};

/// A rayon pool of `n` threads, built once per size and reused so that its threads keep their caches
/// (the tokenizers' per-thread piece and word caches).
pub fn pool(n: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&n) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("alignfw-{i}"))
            .build()
            .map_err(|e| Error::InvalidInput(format!("cannot start {n} threads: {e}")))?,
    );
    pools.insert(n, p.clone());
    Ok(p)
}

/// Runs `f` on a pool of `num_threads` threads ([`pool`]), or where it is called (so on rayon's global
/// pool) when `None`. `Some(0)` is refused.
pub fn install<R: Send>(num_threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R> {
    match num_threads {
        Some(0) => Err(Error::InvalidInput("num_threads must be at least 1".into())),
        Some(n) => Ok(pool(n)?.install(f)),
        None => Ok(f()),
    }
}

//! Batches on threads: reusable rayon pools, and [`map_in_order`], which lets the calling thread use
//! each finished part of a batch while the other threads are still working on the rest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// Chunks per thread: enough for the threads to finish close together, few enough that handing
/// chunks out costs nothing measurable.
const CHUNKS_PER_THREAD: usize = 8;
/// The largest chunk (items): bounds the part of the work left to the caller after the last chunk.
const MAX_CHUNK: usize = 512;

/// Applies `f` to every item on `num_threads` threads (rayon's global pool when `None`), **the calling
/// thread among them**, and calls `consume` on the calling thread with the results of each chunk of
/// consecutive items, in order, as soon as the chunk and all before it are done. Between chunks it
/// encodes, the calling thread consumes; the other threads keep working meanwhile.
///
/// This is for work whose results must be converted by one particular thread (Python objects are built
/// under the GIL): the conversion then overlaps the parallel part instead of following it.
///
/// The first error in item order is returned; once an item fails, chunks not yet started are skipped.
pub fn map_in_order<T, R, F, C>(items: &[T], num_threads: Option<usize>, f: F, mut consume: C) -> Result<()>
where
    T: Sync,
    R: Send + Sync,
    F: Fn(&T) -> Result<R> + Sync,
    C: FnMut(&[R]),
{
    let threads = match num_threads {
        Some(0) => return Err(Error::InvalidInput("num_threads must be at least 1".into())),
        Some(n) => n,
        None => rayon::current_num_threads(),
    };
    let chunk = (items.len() / (threads * CHUNKS_PER_THREAD)).clamp(1, MAX_CHUNK);
    let n_chunks = items.len().div_ceil(chunk);
    if threads == 1 || n_chunks <= 1 {
        let results = items.iter().map(&f).collect::<Result<Vec<R>>>()?;
        consume(&results);
        return Ok(());
    }
    let chunks = Chunks {
        items,
        f,
        chunk,
        done: (0..n_chunks).map(|_| OnceLock::new()).collect(),
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
    };
    match num_threads {
        Some(n) => pool(n)?.in_place_scope(|scope| chunks.run(scope, threads, &mut consume)),
        None => rayon::in_place_scope(|scope| chunks.run(scope, threads, &mut consume)),
    }
}

/// The shared state of [`map_in_order`].
struct Chunks<'a, T, R, F> {
    items: &'a [T],
    f: F,
    chunk: usize,
    /// Each chunk's results, set once by whichever thread worked on it.
    done: Vec<OnceLock<Result<Vec<R>>>>,
    /// The next chunk to claim.
    next: AtomicUsize,
    /// Set at the first error: chunks claimed later are skipped.
    failed: AtomicBool,
}

impl<T, R, F> Chunks<'_, T, R, F>
where
    T: Sync,
    R: Send + Sync,
    F: Fn(&T) -> Result<R> + Sync,
{
    /// Claims the next chunk and works on it; false when every chunk has been claimed.
    fn work(&self) -> bool {
        let c = self.next.fetch_add(1, Ordering::Relaxed);
        if c >= self.done.len() {
            return false;
        }
        let part = &self.items[c * self.chunk..((c + 1) * self.chunk).min(self.items.len())];
        let result = if self.failed.load(Ordering::Relaxed) {
            Ok(Vec::new()) // never consumed: an earlier chunk's error is returned first
        } else {
            part.iter().map(&self.f).collect::<Result<Vec<R>>>()
        };
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        let _ = self.done[c].set(result);
        true
    }

    /// The calling thread's part: start `threads - 1` workers, then consume the chunks in order,
    /// working on unclaimed ones while the next in order is not ready.
    fn run<'s>(&'s self, scope: &rayon::Scope<'s>, threads: usize, consume: &mut impl FnMut(&[R])) -> Result<()> {
        for _ in 1..threads {
            scope.spawn(|_| while self.work() {});
        }
        for slot in &self.done {
            let result = loop {
                if let Some(r) = slot.get() {
                    break r;
                }
                if !self.work() {
                    std::thread::yield_now(); // another thread holds this chunk: its end is near
                }
            };
            match result {
                Ok(results) => consume(results),
                Err(e) => {
                    self.failed.store(true, Ordering::Relaxed);
                    return Err(e.clone());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        items: &[u32],
        threads: Option<usize>,
        f: impl Fn(&u32) -> Result<u32> + Sync,
    ) -> (Result<()>, Vec<u32>, usize) {
        let (mut out, mut calls) = (Vec::new(), 0);
        let r = map_in_order(items, threads, f, |part: &[u32]| {
            out.extend_from_slice(part);
            calls += 1;
        });
        (r, out, calls)
    }

    #[test]
    fn results_arrive_in_order_on_any_thread_count() {
        let items: Vec<u32> = (0..10_000).collect();
        for threads in [Some(1), Some(2), Some(3), None] {
            let (r, out, calls) = run(&items, threads, |&x| Ok(x * 2));
            assert!(r.is_ok());
            assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
            assert!(calls >= 1);
        }
        let (r, out, _) = run(&[], Some(2), |&x| Ok(x));
        assert!(r.is_ok() && out.is_empty());
    }

    #[test]
    fn the_first_error_in_item_order_is_returned() {
        let items: Vec<u32> = (0..5_000).collect();
        for threads in [Some(1), Some(2), Some(4)] {
            let (r, out, _) = run(&items, threads, |&x| {
                if x == 1234 || x == 4000 {
                    Err(Error::Tokenize(format!("item {x}")))
                } else {
                    Ok(x)
                }
            });
            assert!(matches!(r, Err(Error::Tokenize(m)) if m == "item 1234"));
            assert!(out.len() <= 1234 && out.iter().enumerate().all(|(i, &x)| x == i as u32));
        }
        assert!(matches!(
            run(&items, Some(0), |&x| Ok(x)).0,
            Err(Error::InvalidInput(_))
        ));
    }
}

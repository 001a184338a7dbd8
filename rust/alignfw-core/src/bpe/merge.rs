//! Applying BPE merges to one pre-tokenized piece.
//!
//! The rule is Hugging Face's `Word::merge_all` (and tiktoken's `byte_pair_merge`): repeatedly merge
//! the adjacent pair with the lowest merge rank, the leftmost one on ties. Short pieces use a flat scan
//! over a small vector (fastest for the typical 1–20 symbols); long ones use a binary heap over a linked
//! list of symbols, O(n log n), so that a 10 MB piece without whitespace is not quadratic.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// Symbols up to this count use the flat scan; longer pieces the heap.
pub const HEAP_THRESHOLD: usize = 64;

/// `(left id, right id)` → `(rank, merged id)`.
#[derive(Debug, Clone, Default)]
pub struct MergeMap {
    map: FxHashMap<u64, (u32, u32)>,
}

#[inline(always)]
fn key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

impl MergeMap {
    /// Adds a merge; a pair seen twice keeps its last rank, as Hugging Face's map does.
    pub fn insert(&mut self, a: u32, b: u32, rank: u32, new_id: u32) {
        self.map.insert(key(a, b), (rank, new_id));
    }

    #[inline(always)]
    pub fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.map.get(&key(a, b)).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All merges as `((left, right), (rank, merged))`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = ((u32, u32), (u32, u32))> + '_ {
        self.map.iter().map(|(&k, &v)| (((k >> 32) as u32, k as u32), v))
    }

    /// Merges `ids` in place; `scratch` is a reusable buffer.
    #[inline]
    pub fn apply(&self, ids: &mut Vec<u32>, scratch: &mut Vec<(u32, u32)>) {
        if ids.len() <= HEAP_THRESHOLD {
            self.apply_scan_with(ids, scratch)
        } else {
            self.apply_heap(ids)
        }
    }

    /// Flat scan: O(n²) but branch-light and allocation-free for short pieces.
    pub fn apply_scan(&self, ids: &mut Vec<u32>) {
        self.apply_scan_with(ids, &mut Vec::new())
    }

    fn apply_scan_with(&self, ids: &mut Vec<u32>, pairs: &mut Vec<(u32, u32)>) {
        if ids.len() < 2 {
            return;
        }
        const NONE: (u32, u32) = (u32::MAX, u32::MAX);
        // pairs[i]: (rank, merged id) of (ids[i], ids[i + 1]).
        pairs.clear();
        pairs.extend(ids.windows(2).map(|w| self.get(w[0], w[1]).unwrap_or(NONE)));
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, &(rank, _)) in pairs.iter().enumerate() {
                if rank < best {
                    best = rank;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            ids[at] = pairs[at].1;
            ids.remove(at + 1);
            pairs.remove(at);
            if at < pairs.len() {
                pairs[at] = self.get(ids[at], ids[at + 1]).unwrap_or(NONE);
            }
            if at > 0 {
                pairs[at - 1] = self.get(ids[at - 1], ids[at]).unwrap_or(NONE);
            }
        }
    }

    /// Heap over a doubly linked list of symbols, as Hugging Face's `Word::merge_all`. Its buffers are
    /// kept per thread, so long pieces (unspaced CJK text) allocate nothing.
    pub fn apply_heap(&self, ids: &mut Vec<u32>) {
        let n = ids.len();
        if n < 2 {
            return;
        }
        HEAP_SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => self.apply_heap_with(ids, &mut s),
            Err(_) => self.apply_heap_with(ids, &mut HeapScratch::default()),
        })
    }

    fn apply_heap_with(&self, ids: &mut Vec<u32>, s: &mut HeapScratch) {
        const NIL: u32 = u32::MAX;
        // `prev[i] == DEAD`: symbol i was merged into its left neighbour.
        const DEAD: u32 = u32::MAX - 1;
        let n = ids.len();
        let HeapScratch { prev, next, heap } = s;
        prev.clear();
        prev.extend((0..n as u32).map(|i| if i == 0 { NIL } else { i - 1 }));
        next.clear();
        next.extend((1..=n as u32).map(|i| if i as usize == n { NIL } else { i }));
        // Entries: (rank, position of the left symbol, merged id); min-heap via Reverse.
        let mut entries = std::mem::take(heap).into_vec();
        entries.clear();
        entries.extend(
            ids.windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.get(w[0], w[1]).map(|(r, m)| Reverse((r, i as u32, m)))),
        );
        let mut queue = BinaryHeap::from(entries);
        while let Some(Reverse((_rank, pos, new_id))) = queue.pop() {
            let pos = pos as usize;
            if prev[pos] == DEAD || next[pos] == NIL {
                continue;
            }
            let right = next[pos] as usize;
            // Skip entries made stale by an earlier merge at this position.
            match self.get(ids[pos], ids[right]) {
                Some((_, m)) if m == new_id => {}
                _ => continue,
            }
            ids[pos] = new_id;
            prev[right] = DEAD;
            next[pos] = next[right];
            if next[right] != NIL {
                prev[next[right] as usize] = pos as u32;
            }
            if prev[pos] != NIL {
                let p = prev[pos] as usize;
                if let Some((r, m)) = self.get(ids[p], ids[pos]) {
                    queue.push(Reverse((r, p as u32, m)));
                }
            }
            if next[pos] != NIL {
                let q = next[pos] as usize;
                if let Some((r, m)) = self.get(ids[pos], ids[q]) {
                    queue.push(Reverse((r, pos as u32, m)));
                }
            }
        }
        *heap = queue;
        let mut w = 0;
        for r in 0..n {
            if prev[r] != DEAD {
                ids[w] = ids[r];
                w += 1;
            }
        }
        ids.truncate(w);
    }
}

/// Reusable buffers of [`MergeMap::apply_heap`].
#[derive(Default)]
struct HeapScratch {
    prev: Vec<u32>,
    next: Vec<u32>,
    heap: BinaryHeap<Reverse<(u32, u32, u32)>>,
}

thread_local! {
    static HEAP_SCRATCH: RefCell<HeapScratch> = RefCell::new(HeapScratch::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_rank_then_leftmost() {
        // a=0 b=1 c=2; ab=3 (rank 1), bc=4 (rank 0), aa=5 (rank 2)
        let mut m = MergeMap::default();
        m.insert(0, 1, 1, 3);
        m.insert(1, 2, 0, 4);
        m.insert(0, 0, 2, 5);
        for apply in [MergeMap::apply_scan, MergeMap::apply_heap] {
            let mut ids = vec![0, 1, 2];
            apply(&m, &mut ids);
            assert_eq!(ids, [0, 4]);
            let mut ids = vec![0, 0, 0];
            apply(&m, &mut ids);
            assert_eq!(ids, [5, 0]);
            let mut ids = vec![0, 1, 0, 1];
            apply(&m, &mut ids);
            assert_eq!(ids, [3, 3]);
        }
    }

    #[test]
    fn heap_equals_scan_on_random_merges() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..200 {
            // 4 base symbols and 40 random merges, ids and ranks in creation order.
            let mut m = MergeMap::default();
            let mut next_id = 4u32;
            for rank in 0..40 {
                let (a, b) = (rnd(next_id as u64) as u32, rnd(next_id as u64) as u32);
                if m.get(a, b).is_none() {
                    m.insert(a, b, rank, next_id);
                    next_id += 1;
                }
            }
            for len in [2usize, 5, 17, 80, 300] {
                let ids: Vec<u32> = (0..len).map(|_| rnd(4) as u32).collect();
                let (mut x, mut y) = (ids.clone(), ids.clone());
                m.apply_scan(&mut x);
                m.apply_heap(&mut y);
                assert_eq!(x, y, "{ids:?}");
            }
        }
    }
}

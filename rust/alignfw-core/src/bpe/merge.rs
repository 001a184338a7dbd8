//! Applying BPE merges to one pre-tokenized piece.
//!
//! The rule is Hugging Face's `Word::merge_all` (and tiktoken's `byte_pair_merge`): repeatedly merge
//! the adjacent pair with the lowest merge rank, the leftmost one on ties. Short pieces use a flat scan
//! over a small vector (fastest for the typical 1–20 symbols); long ones use a binary heap over a linked
//! list of symbols, O(n log n), so that a 10 MB piece without whitespace is not quadratic.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Symbols up to this count use the flat scan; longer pieces the heap.
pub const HEAP_THRESHOLD: usize = 64;

/// A slot's key when the slot is empty: no pair of ids below `u32::MAX` has this key.
const EMPTY: u64 = u64::MAX;

/// `(left id, right id)` → `(rank, merged id)`: an open-addressing table with linear probing, at most
/// half full, one 16-byte slot per entry. A lookup is a multiply, a shift and usually one compare
/// (a general hash map spends about three times as many instructions per lookup, and encoding long
/// pieces is mostly lookups).
#[derive(Debug, Clone)]
pub struct MergeMap {
    slots: Vec<Slot>,
    /// `64 - log2(slots.len())`: the hash's top bits index the table.
    shift: u32,
    len: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    rank: u32,
    id: u32,
}

const EMPTY_SLOT: Slot = Slot {
    key: EMPTY,
    rank: 0,
    id: 0,
};

impl Default for MergeMap {
    fn default() -> Self {
        MergeMap {
            slots: vec![EMPTY_SLOT; 16],
            shift: 64 - 4,
            len: 0,
        }
    }
}

#[inline(always)]
fn key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

impl MergeMap {
    #[inline(always)]
    fn home(&self, k: u64) -> usize {
        (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Adds a merge; a pair seen twice keeps its last rank, as Hugging Face's map does.
    ///
    /// # Panics
    /// If both ids are `u32::MAX` (that key marks empty slots; no vocabulary has 2^32 tokens).
    pub fn insert(&mut self, a: u32, b: u32, rank: u32, new_id: u32) {
        let k = key(a, b);
        assert!(
            k != EMPTY,
            "merge of id {a} with id {b}: ids must be below {}",
            u32::MAX
        );
        if 2 * (self.len + 1) > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(k);
        let slots = &mut self.slots;
        loop {
            let slot = &mut slots[i];
            if slot.key == EMPTY {
                self.len += 1;
            }
            if slot.key == EMPTY || slot.key == k {
                *slot = Slot {
                    key: k,
                    rank,
                    id: new_id,
                };
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = 2 * self.slots.len();
        let old = std::mem::replace(&mut self.slots, vec![EMPTY_SLOT; size]);
        self.shift -= 1;
        self.len = 0;
        for s in old.into_iter().filter(|s| s.key != EMPTY) {
            self.insert((s.key >> 32) as u32, s.key as u32, s.rank, s.id);
        }
    }

    #[inline(always)]
    pub fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        let k = key(a, b);
        let mask = self.slots.len() - 1;
        let mut i = self.home(k);
        loop {
            let slot = self.slots[i];
            if slot.key == k {
                return Some((slot.rank, slot.id));
            }
            if slot.key == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All merges as `((left, right), (rank, merged))`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = ((u32, u32), (u32, u32))> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != EMPTY)
            .map(|s| (((s.key >> 32) as u32, s.key as u32), (s.rank, s.id)))
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
        // Entries: `rank << 32 | position of the left symbol`: one u64 compare orders them by rank,
        // then leftmost (min-heap via Reverse). The merged id is looked up again when an entry is
        // popped, which also tells stale entries apart: ranks are unique per pair, so an entry is
        // current exactly when the pair now at its position has its rank. (Hugging Face compares the
        // merged ids instead; the two agree, since a pair at a position only ever grows to the right,
        // and a longer pair never merges into the token of a shorter one.)
        let mut entries = std::mem::take(heap).into_vec();
        entries.clear();
        entries.extend(
            ids.windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.get(w[0], w[1]).map(|(r, _)| Reverse((r as u64) << 32 | i as u64))),
        );
        let mut queue = BinaryHeap::from(entries);
        while let Some(Reverse(entry)) = queue.pop() {
            let (rank, pos) = ((entry >> 32) as u32, entry as u32 as usize);
            if prev[pos] == DEAD || next[pos] == NIL {
                continue;
            }
            let right = next[pos] as usize;
            let new_id = match self.get(ids[pos], ids[right]) {
                Some((r, m)) if r == rank => m,
                _ => continue,
            };
            ids[pos] = new_id;
            prev[right] = DEAD;
            next[pos] = next[right];
            if next[right] != NIL {
                prev[next[right] as usize] = pos as u32;
            }
            if prev[pos] != NIL {
                let p = prev[pos] as usize;
                if let Some((r, _)) = self.get(ids[p], ids[pos]) {
                    queue.push(Reverse((r as u64) << 32 | p as u64));
                }
            }
            if next[pos] != NIL {
                let q = next[pos] as usize;
                if let Some((r, _)) = self.get(ids[pos], ids[q]) {
                    queue.push(Reverse((r as u64) << 32 | pos as u64));
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
    heap: BinaryHeap<Reverse<u64>>,
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

//! Long pieces start from characters instead of bytes, where that cannot change the result.
//!
//! A piece of unspaced CJK text is hundreds of bytes that the heap merges one pair at a time, two
//! merges per character before any merge between characters (a quarter of the encoder's time on a
//! mixed corpus, for 2% of its bytes). Starting such a character from its token skips those merges
//! and leaves a third of the symbols. The result is the same when:
//!
//! - merges are **monotone**: each merge's operands are made by merges of lower rank (true of every
//!   trained vocabulary). BPE then applies merges in rank order, and a character's own merges, which
//!   only ever meet its own bytes, all come before any merge that uses the whole character;
//! - no merge takes **part of the character** together with a neighbour. The first such merge would
//!   have as an operand a proper prefix of the character (after whatever precedes it) or a proper
//!   suffix of it (before the next character's first byte). Byte-level vocabularies have a few dozen
//!   of these (`" "` + `"\xe2"`, `"\x8d"` + `"\xf0\x9f"`); the characters they can touch, told by
//!   the prefix's lead byte or by (suffix's last byte, next character's first byte), stay bytes;
//! - BPE of the character's bytes alone gives one token (the characters of the vocabulary).

use rustc_hash::FxHashMap;

use super::merge::MergeMap;

/// How a long piece's characters may start; `None` from [`CharStarts::new`] when the vocabulary does
/// not allow it.
pub(super) struct CharStarts {
    /// A character's bytes, little-endian in a `u32` → its token.
    ids: FxHashMap<u32, u32>,
    /// Lead bytes of characters that some merge's right operand holds only the start of.
    split_lead: [bool; 256],
    /// Bit `(last << 8) | next`: a merge's left operand is continuation bytes ending in `last` and its
    /// right operand starts with `next`.
    split_tail: Box<[u64; 1024]>,
}

/// Bytes in the UTF-8 sequence that `lead` starts; 0 for a byte that starts none.
#[inline(always)]
fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 0,
    }
}

#[inline(always)]
fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

/// Up to 4 bytes, little-endian, zero-padded: distinct for distinct UTF-8 sequences.
#[inline(always)]
fn char_key(bytes: &[u8]) -> u32 {
    bytes.iter().rev().fold(0, |k, &b| (k << 8) | b as u32)
}

impl CharStarts {
    /// `bytes_of(id)`: the bytes a token stands for; `vocab`: every model token with its bytes.
    pub(super) fn new<'a>(
        merges: &MergeMap,
        byte_ids: &[u32; 256],
        bytes_of: impl Fn(u32) -> &'a [u8],
        vocab: impl Iterator<Item = (&'a [u8], u32)>,
    ) -> Option<Self> {
        if byte_ids.contains(&u32::MAX) {
            return None;
        }
        // Monotone: the highest rank that makes each token, below every rank that uses it.
        let mut made: FxHashMap<u32, u32> = FxHashMap::default();
        for (_, (rank, id)) in merges.iter() {
            let r = made.entry(id).or_insert(rank);
            *r = (*r).max(rank);
        }
        let mut split_lead = [false; 256];
        let mut split_tail = Box::new([0u64; 1024]);
        for ((a, b), (rank, _)) in merges.iter() {
            if [a, b].iter().any(|t| made.get(t).is_some_and(|&r| r >= rank)) {
                return None;
            }
            let (left, right) = (bytes_of(a), bytes_of(b));
            let (Some(&first), Some(&last)) = (right.first(), left.last()) else {
                return None;
            };
            // The right operand is the start of a character, cut short.
            if right.len() < sequence_len(first) && right[1..].iter().all(|&c| is_continuation(c)) {
                split_lead[first as usize] = true;
            }
            // The left operand is the end of a character, and the right one starts the next.
            if left.iter().all(|&c| is_continuation(c)) && !is_continuation(first) {
                let bit = (last as usize) << 8 | first as usize;
                split_tail[bit / 64] |= 1 << (bit % 64);
            }
        }
        let mut ids = FxHashMap::default();
        let mut scratch = Vec::new();
        for (bytes, id) in vocab {
            let Ok(s) = std::str::from_utf8(bytes) else { continue };
            let mut chars = s.chars();
            if bytes.len() < 2 || chars.next().is_none() || chars.next().is_some() {
                continue;
            }
            scratch.clear();
            scratch.extend(bytes.iter().map(|&b| byte_ids[b as usize]));
            merges.apply_scan(&mut scratch);
            if scratch == [id] {
                ids.insert(char_key(bytes), id);
            }
        }
        Some(CharStarts {
            ids,
            split_lead,
            split_tail,
        })
    }

    /// The symbols BPE may start `piece` from, into `ids`: a token for each character that can start
    /// as one, bytes for the rest. `false` (and `ids` unspecified) when `piece` is not UTF-8.
    pub(super) fn start(&self, piece: &[u8], byte_ids: &[u32; 256], ids: &mut Vec<u32>) -> bool {
        ids.clear();
        let n = piece.len();
        let mut i = 0;
        while i < n {
            let lead = piece[i];
            let len = sequence_len(lead);
            if len == 1 {
                ids.push(byte_ids[lead as usize]);
                i += 1;
                continue;
            }
            let end = i + len;
            if len == 0 || end > n || !piece[i + 1..end].iter().all(|&b| is_continuation(b)) {
                return false;
            }
            let tail_ok = end == n || {
                let bit = (piece[end - 1] as usize) << 8 | piece[end] as usize;
                self.split_tail[bit / 64] & (1 << (bit % 64)) == 0
            };
            match self.ids.get(&char_key(&piece[i..end])) {
                Some(&id) if tail_ok && !self.split_lead[lead as usize] => ids.push(id),
                _ => ids.extend(piece[i..end].iter().map(|&b| byte_ids[b as usize])),
            }
            i = end;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Characters of 1 to 4 bytes, some sharing lead bytes or last bytes, and a joiner.
    const ALPHABET: [&str; 10] = ["a", " ", "é", "ü", "中", "文", "下", "😀", "👍", "\u{200d}"];

    fn text(rng: &mut Rng, chars: usize) -> Vec<u8> {
        (0..chars)
            .flat_map(|_| ALPHABET[rng.below(ALPHABET.len())].bytes())
            .collect()
    }

    /// A vocabulary "trained" by merging adjacent pairs picked at random from a random corpus, so that
    /// it holds merges across partial characters, as byte-level vocabularies do.
    fn random_vocabulary(rng: &mut Rng, merges_wanted: usize) -> (MergeMap, Vec<Vec<u8>>) {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut merges = MergeMap::default();
        let mut corpus: Vec<Vec<u32>> = (0..20)
            .map(|_| text(rng, 12).into_iter().map(u32::from).collect())
            .collect();
        let mut rank = 0u32;
        for _ in 0..50 * merges_wanted {
            if rank as usize == merges_wanted {
                break;
            }
            let line = &corpus[rng.below(corpus.len())];
            if line.len() < 2 {
                continue;
            }
            let at = rng.below(line.len() - 1);
            let (a, b) = (line[at], line[at + 1]);
            let joined = [tokens[a as usize].as_slice(), tokens[b as usize].as_slice()].concat();
            if merges.get(a, b).is_some() || tokens.contains(&joined) {
                continue;
            }
            merges.insert(a, b, rank, tokens.len() as u32);
            tokens.push(joined);
            rank += 1;
            for line in &mut corpus {
                merges.apply_scan(line);
            }
        }
        (merges, tokens)
    }

    fn starts(merges: &MergeMap, tokens: &[Vec<u8>]) -> Option<CharStarts> {
        let byte_ids: [u32; 256] = std::array::from_fn(|b| b as u32);
        let vocab = tokens.iter().enumerate().map(|(id, t)| (t.as_slice(), id as u32));
        CharStarts::new(merges, &byte_ids, |id| &tokens[id as usize], vocab)
    }

    #[test]
    fn starting_from_characters_gives_the_same_merges() {
        let byte_ids: [u32; 256] = std::array::from_fn(|b| b as u32);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut started, mut split) = (0, 0);
        for _ in 0..300 {
            let wanted = 10 + rng.below(60);
            let (merges, tokens) = random_vocabulary(&mut rng, wanted);
            let starts = starts(&merges, &tokens).expect("random training is monotone");
            split += starts.split_lead.iter().any(|&s| s) as usize + starts.split_tail.iter().any(|&w| w != 0) as usize;
            for _ in 0..20 {
                let chars = 20 + rng.below(60);
                let piece = text(&mut rng, chars);
                let mut plain: Vec<u32> = piece.iter().map(|&b| b as u32).collect();
                merges.apply_heap(&mut plain);
                let mut ids = Vec::new();
                assert!(starts.start(&piece, &byte_ids, &mut ids));
                started += (ids.len() < piece.len()) as usize;
                merges.apply_heap(&mut ids);
                assert_eq!(ids, plain, "{:?}", String::from_utf8_lossy(&piece));
            }
        }
        // Both the shortcut and the rules that refuse it were exercised.
        assert!(started > 1000 && split > 100, "{started} {split}");
    }

    #[test]
    fn refused_without_monotone_merges_or_every_byte() {
        // "ab" is made at rank 1 but used at rank 0.
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens.push(b"ab".to_vec());
        tokens.push(b"abc".to_vec());
        let mut merges = MergeMap::default();
        merges.insert(256, b'c' as u32, 0, 257);
        merges.insert(b'a' as u32, b'b' as u32, 1, 256);
        assert!(starts(&merges, &tokens).is_none());

        let mut merges = MergeMap::default();
        merges.insert(b'a' as u32, b'b' as u32, 0, 256);
        merges.insert(256, b'c' as u32, 1, 257);
        assert!(starts(&merges, &tokens).is_some());
        let mut byte_ids: [u32; 256] = std::array::from_fn(|b| b as u32);
        byte_ids[0xff] = u32::MAX;
        assert!(CharStarts::new(&merges, &byte_ids, |id| &tokens[id as usize], std::iter::empty()).is_none());
    }

    #[test]
    fn pieces_that_are_not_utf8_are_left_to_the_bytes() {
        let byte_ids: [u32; 256] = std::array::from_fn(|b| b as u32);
        let tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let starts = starts(&MergeMap::default(), &tokens).unwrap();
        let mut ids = Vec::new();
        for bad in [&b"\x80abc"[..], b"ab\xe4\xb8", b"\xe4a\x80", b"\xff"] {
            assert!(!starts.start(bad, &byte_ids, &mut ids), "{bad:?}");
        }
        assert!(starts.start("a中😀".as_bytes(), &byte_ids, &mut ids));
    }
}

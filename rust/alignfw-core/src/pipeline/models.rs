//! The subword models: WordPiece (BERT), SentencePiece-style BPE (Llama 2, Mistral, Gemma: characters,
//! byte fallback, fused unknowns) and Unigram (T5, ALBERT, XLNet: Viterbi over the piece lattice).
//!
//! Each turns one pre-tokenized word into `(id, start, end)` triples, `start..end` being byte offsets in
//! the word. The rules are those of Hugging Face `tokenizers` (`models/wordpiece`, `models/bpe`,
//! `models/unigram`), re-implemented here and checked against it by `tests/tokenizer/test_families.py`.

use rustc_hash::FxHashMap;

use crate::bpe::MergeMap;
use crate::error::{Error, Result};

/// One token of a word: id and byte range in the word.
pub type Tok = (u32, usize, usize);

/// Greedy longest-match-first WordPiece (Schuster & Nakajima 2012; BERT's `wordpiece` tokenizer).
#[derive(Debug, Clone)]
pub struct WordPiece {
    pub vocab: FxHashMap<String, u32>,
    pub unk_id: u32,
    pub prefix: String,
    pub max_input_chars_per_word: usize,
}

impl WordPiece {
    pub fn tokenize(&self, word: &str, out: &mut Vec<Tok>) {
        if word.chars().count() > self.max_input_chars_per_word {
            out.push((self.unk_id, 0, word.len()));
            return;
        }
        let mark = out.len();
        let mut buf = String::with_capacity(self.prefix.len() + word.len());
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                buf.clear();
                if start > 0 {
                    buf.push_str(&self.prefix);
                }
                buf.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(buf.as_str()) {
                    found = Some(id);
                    break;
                }
                end -= word[start..end].chars().next_back().map_or(1, char::len_utf8);
            }
            match found {
                Some(id) => out.push((id, start, end)),
                None => {
                    // A word with a piece outside the vocabulary is one unknown token.
                    out.truncate(mark);
                    out.push((self.unk_id, 0, word.len()));
                    return;
                }
            }
            start = end;
        }
    }
}

/// BPE over characters with SentencePiece's byte fallback (`<0xNN>` tokens) and fused unknowns.
#[derive(Debug, Clone)]
pub struct CharBpe {
    pub vocab: FxHashMap<String, u32>,
    pub merges: MergeMap,
    pub unk_id: Option<u32>,
    pub fuse_unk: bool,
    pub byte_fallback: bool,
    pub ignore_merges: bool,
    /// id of `<0xNN>` for each byte, if the vocabulary has it.
    pub byte_ids: [Option<u32>; 256],
    /// Byte length of each id's spelling (`u32::MAX` for byte tokens and holes).
    pub id_len: Vec<u32>,
    /// No token has a character other than `▁` followed by `▁`, `▁` is a token, and whole-word lookup
    /// (`ignore_merges`) is off: then no merge can cross the point before a `▁` that follows another
    /// character, and a word can be merged piece by piece with the same result (SentencePiece
    /// vocabularies, trained on whitespace-split text, have this property).
    pub splits_at_metaspace: bool,
}

/// The Metaspace character SentencePiece vocabularies use for spaces.
pub const METASPACE: char = '\u{2581}';

impl CharBpe {
    /// Whether `vocab` allows [`CharBpe::splits_at_metaspace`].
    pub fn vocab_splits_at_metaspace(vocab: &FxHashMap<String, u32>, ignore_merges: bool) -> bool {
        let mut buf = [0u8; 4];
        !ignore_merges
            && vocab.contains_key(METASPACE.encode_utf8(&mut buf) as &str)
            && vocab.keys().all(|t| {
                let mut prev: Option<char> = None;
                t.chars().all(|c| {
                    let ok = !(c == METASPACE && prev.is_some_and(|p| p != METASPACE));
                    prev = Some(c);
                    ok
                })
            })
    }

    /// Calls `f` on each piece of `range` of `text` that can be merged on its own: the range is cut
    /// before each `▁` that follows another character (when the vocabulary allows it).
    pub fn pieces(&self, text: &str, range: (usize, usize), f: &mut dyn FnMut((usize, usize))) {
        if !self.splits_at_metaspace {
            return f(range);
        }
        let (base, end) = range;
        let mut start = base;
        let mut prev_meta = true;
        for (i, c) in text[base..end].char_indices() {
            let is_meta = c == METASPACE;
            if is_meta && !prev_meta && base + i > start {
                f((start, base + i));
                start = base + i;
            }
            prev_meta = is_meta;
        }
        if start < end {
            f((start, end));
        }
    }
}

impl CharBpe {
    pub fn tokenize(&self, word: &str, out: &mut Vec<Tok>, ids: &mut Vec<u32>, lens: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(word) {
                out.push((id, 0, word.len()));
                return;
            }
        }
        ids.clear();
        // Byte lengths of the unknown symbols, in order (fused runs add up).
        lens.clear();
        let mut pending_unk: Option<u32> = None;
        let mut buf = [0u8; 4];
        for c in word.chars() {
            let s: &str = c.encode_utf8(&mut buf);
            if let Some(&id) = self.vocab.get(s) {
                if let Some(l) = pending_unk.take() {
                    ids.push(self.unk_id.expect("pending unk implies an unk id"));
                    lens.push(l);
                }
                ids.push(id);
                continue;
            }
            if self.byte_fallback && s.bytes().all(|b| self.byte_ids[b as usize].is_some()) {
                // As Hugging Face: byte tokens do not flush a pending unknown.
                ids.extend(s.bytes().map(|b| self.byte_ids[b as usize].unwrap_or_default()));
                continue;
            }
            if let Some(unk) = self.unk_id {
                pending_unk = match pending_unk {
                    Some(l) if self.fuse_unk => Some(l + s.len() as u32),
                    Some(l) => {
                        ids.push(unk);
                        lens.push(l);
                        Some(s.len() as u32)
                    }
                    None => Some(s.len() as u32),
                };
            }
        }
        if let Some(l) = pending_unk {
            ids.push(self.unk_id.expect("pending unk implies an unk id"));
            lens.push(l);
        }
        self.merges.apply_heap(ids);
        let mut unk_lens = lens.iter();
        let mut at = 0usize;
        for &id in ids.iter() {
            let len = if Some(id) == self.unk_id {
                unk_lens.next().copied().unwrap_or(0) as usize
            } else {
                match self.id_len.get(id as usize) {
                    Some(&l) if l != u32::MAX => l as usize,
                    _ => 1,
                }
            };
            let end = (at + len).min(word.len());
            out.push((id, at, end));
            at = end;
        }
    }
}

/// A byte trie over the Unigram pieces, for common-prefix search.
#[derive(Debug, Clone, Default)]
struct Trie {
    /// `(node, byte)` → child node.
    edges: FxHashMap<(u32, u8), u32>,
    /// Piece id ending at each node.
    leaf: Vec<Option<u32>>,
}

impl Trie {
    fn insert(&mut self, key: &[u8], id: u32) {
        if self.leaf.is_empty() {
            self.leaf.push(None);
        }
        let mut node = 0u32;
        for &b in key {
            node = match self.edges.get(&(node, b)) {
                Some(&n) => n,
                None => {
                    let n = self.leaf.len() as u32;
                    self.leaf.push(None);
                    self.edges.insert((node, b), n);
                    n
                }
            };
        }
        self.leaf[node as usize] = Some(id);
    }
}

const UNK_PENALTY: f64 = 10.0;

/// Unigram language-model tokenization (Kudo 2018): the segmentation of highest total log-probability.
#[derive(Debug, Clone)]
pub struct Unigram {
    pub pieces: Vec<(String, f64)>,
    token_to_id: FxHashMap<String, u32>,
    trie: Trie,
    min_score: f64,
    pub unk_id: Option<u32>,
    pub byte_fallback: bool,
    byte_ids: [Option<u32>; 256],
}

impl Unigram {
    pub fn new(pieces: Vec<(String, f64)>, unk_id: Option<u32>, byte_fallback: bool) -> Result<Self> {
        if let Some(u) = unk_id {
            if u as usize >= pieces.len() {
                return Err(Error::TokenizerFormat(format!(
                    "Unigram unk_id {u} is outside the vocabulary of {} pieces",
                    pieces.len()
                )));
            }
        }
        let mut token_to_id = FxHashMap::default();
        let mut trie = Trie::default();
        let mut min_score = f64::INFINITY;
        for (i, (p, score)) in pieces.iter().enumerate() {
            // A piece listed twice resolves to its last id, in the map and the trie alike.
            token_to_id.insert(p.clone(), i as u32);
            trie.insert(p.as_bytes(), i as u32);
            min_score = min_score.min(*score);
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = token_to_id.get(&format!("<0x{b:02X}>")).copied();
        }
        Ok(Unigram {
            pieces,
            token_to_id,
            trie,
            min_score,
            unk_id,
            byte_fallback,
            byte_ids,
        })
    }

    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.token_to_id.get(s).copied()
    }

    /// Viterbi over the lattice of pieces; a character no piece starts with becomes an unknown scored
    /// `min_score - 10`; runs of unknowns are fused into one token.
    pub fn tokenize(&self, word: &str, out: &mut Vec<Tok>) -> Result<()> {
        let n = word.len();
        if n == 0 {
            return Ok(());
        }
        let bytes = word.as_bytes();
        let unk_score = self.min_score - UNK_PENALTY;
        // Per end position: (best score, start of the last token, its id); start == usize::MAX: unreached.
        let mut best: Vec<(f64, usize, u32)> = vec![(0.0, usize::MAX, 0); n + 1];
        best[0].1 = 0;
        let mut start = 0;
        while start < n {
            let here = best[start].0;
            let mblen = word[start..].chars().next().map_or(1, char::len_utf8);
            let mut single = false;
            let mut node = 0u32;
            for (k, &b) in bytes[start..].iter().enumerate() {
                let Some(&next) = self.trie.edges.get(&(node, b)) else {
                    break;
                };
                node = next;
                if let Some(id) = self.trie.leaf[node as usize] {
                    let end = start + k + 1;
                    let cand = self.pieces[id as usize].1 + here;
                    let slot = &mut best[end];
                    if slot.1 == usize::MAX || cand > slot.0 {
                        *slot = (cand, start, id);
                    }
                    if k + 1 == mblen {
                        single = true;
                    }
                }
            }
            if !single {
                let unk = self.unk_id.ok_or_else(|| {
                    Error::Tokenize(format!(
                        "Unigram model has no unk_id and no piece for {:?}",
                        &word[start..start + mblen]
                    ))
                })?;
                let cand = unk_score + here;
                let slot = &mut best[start + mblen];
                if slot.1 == usize::MAX || cand > slot.0 {
                    *slot = (cand, start, unk);
                }
            }
            start += mblen;
        }
        // Back-track, fusing runs of unknowns.
        let mut spans: Vec<(usize, usize, bool)> = Vec::new();
        let mut end = n;
        while end > 0 {
            let (_, s, id) = best[end];
            let is_unk = Some(id) == self.unk_id;
            match spans.last_mut() {
                Some(last) if is_unk && last.2 => last.0 = s,
                _ => spans.push((s, end, is_unk)),
            }
            end = s;
        }
        spans.reverse();
        for (s, e, _) in spans {
            let piece = &word[s..e];
            match self.token_to_id.get(piece) {
                Some(&id) => out.push((id, s, e)),
                None => {
                    if self.byte_fallback && piece.bytes().all(|b| self.byte_ids[b as usize].is_some()) {
                        out.extend(
                            piece
                                .bytes()
                                .map(|b| (self.byte_ids[b as usize].unwrap_or_default(), s, e)),
                        );
                        continue;
                    }
                    let unk = self
                        .unk_id
                        .ok_or_else(|| Error::Tokenize(format!("Unigram model has no unk_id for {piece:?}")))?;
                    out.push((unk, s, e));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[&str]) -> FxHashMap<String, u32> {
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect()
    }

    #[test]
    fn wordpiece_is_greedy_longest_first_and_all_or_nothing() {
        let wp = WordPiece {
            vocab: vocab(&["[UNK]", "un", "##aff", "##able", "a", "##ff"]),
            unk_id: 0,
            prefix: "##".into(),
            max_input_chars_per_word: 10,
        };
        let mut out = Vec::new();
        wp.tokenize("unaffable", &mut out);
        assert_eq!(out, vec![(1, 0, 2), (2, 2, 5), (3, 5, 9)]);
        out.clear();
        wp.tokenize("unx", &mut out);
        assert_eq!(out, vec![(0, 0, 3)]);
        out.clear();
        wp.tokenize("aaaaaaaaaaa", &mut out);
        assert_eq!(out, vec![(0, 0, 11)]);
    }

    #[test]
    fn metaspace_pieces_only_where_the_vocabulary_allows() {
        let sp = vocab(&["\u{2581}", "\u{2581}a", "b", "\u{2581}\u{2581}"]);
        assert!(CharBpe::vocab_splits_at_metaspace(&sp, false));
        assert!(!CharBpe::vocab_splits_at_metaspace(&sp, true));
        assert!(!CharBpe::vocab_splits_at_metaspace(
            &vocab(&["\u{2581}", "a\u{2581}"]),
            false
        ));
        assert!(!CharBpe::vocab_splits_at_metaspace(&vocab(&["a"]), false));
        let m = CharBpe {
            vocab: sp,
            merges: MergeMap::default(),
            unk_id: None,
            fuse_unk: false,
            byte_fallback: false,
            ignore_merges: false,
            byte_ids: [None; 256],
            id_len: Vec::new(),
            splits_at_metaspace: true,
        };
        let text = "\u{2581}ab\u{2581}\u{2581}c\u{2581}";
        let mut pieces = Vec::new();
        m.pieces(text, (0, text.len()), &mut |p| pieces.push(&text[p.0..p.1]));
        assert_eq!(pieces, vec!["\u{2581}ab", "\u{2581}\u{2581}c", "\u{2581}"]);
    }

    #[test]
    fn unigram_picks_the_best_segmentation_and_fuses_unknowns() {
        let pieces = vec![
            ("<unk>".to_string(), 0.0),
            ("a".to_string(), -1.0),
            ("b".to_string(), -1.0),
            ("ab".to_string(), -1.5),
            ("abc".to_string(), -5.0),
        ];
        let u = Unigram::new(pieces, Some(0), false).unwrap();
        let mut out = Vec::new();
        u.tokenize("abab", &mut out).unwrap();
        assert_eq!(out, vec![(3, 0, 2), (3, 2, 4)]);
        out.clear();
        u.tokenize("xyab", &mut out).unwrap();
        assert_eq!(out, vec![(0, 0, 2), (3, 2, 4)]);
    }
}

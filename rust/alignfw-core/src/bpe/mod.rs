//! Byte-level BPE (issue 3): pre-tokenize, encode, decode, train, and Hugging Face `tokenizer.json` I/O.
//!
//! References: Sennrich et al. 2016 (BPE, <https://arxiv.org/abs/1508.07909>), Radford et al. 2019
//! (byte-level BPE, GPT-2). Reference implementations this module is tested against: Hugging Face
//! `tokenizers` (`models/bpe`, `pre_tokenizers/byte_level.rs`, `added_vocabulary.rs`) for ids, files
//! and training, and tiktoken for speed.
//!
//! Pipeline of [`Tokenizer::encode`]:
//! 1. split the text on added tokens (non-special ones always, special ones only when allowed, so that
//!    text that merely spells `<|endoftext|>` stays text);
//! 2. normalize each remaining segment (only NFC is supported);
//! 3. pre-tokenize it ([`pretokenize`]: hand-written scanners for the GPT-2, Llama 3 and Qwen2 regexes);
//! 4. BPE-merge each piece's bytes ([`merge`]), through a per-thread piece → ids cache.

pub mod bytelevel;
mod chars;
mod hf;
pub mod merge;
pub mod pretokenize;
pub(crate) mod train;
pub mod unicode;

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde_json::Value;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

pub use self::merge::MergeMap;
pub use self::pretokenize::{OnPiece, Pattern, GPT2_PATTERN, LLAMA3_PATTERN, QWEN2_PATTERN};
pub use self::train::TrainerConfig;
pub use crate::added::{AddedToken, AllowedSpecial};
use crate::added::{AddedVocab, Piece, Splitter};
use crate::error::{Error, Result};
use crate::pipeline::normalized::Normalized;

/// One step of the pre-tokenizer, in Hugging Face's terms.
#[derive(Debug, Clone)]
pub enum PreStep {
    /// `Split(pattern, behavior="Isolated", invert=False)`.
    Split(Pattern),
    /// `ByteLevel(add_prefix_space, use_regex)`; `use_regex` splits with the GPT-2 regex.
    ByteLevel {
        add_prefix_space: bool,
        use_regex: bool,
        trim_offsets: bool,
    },
}

/// The normalizer: none, or Unicode NFC (Qwen2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalizer {
    None,
    Nfc,
}

/// Everything a [`Tokenizer`] is built from; what `tokenizer.json`, `vocab.json` + `merges.txt` and the
/// trainer produce.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The BPE model's vocabulary, as Hugging Face spells tokens (byte-level characters).
    pub vocab: Vec<(String, u32)>,
    /// Merges in rank order, as pairs of spellings.
    pub merges: Vec<(String, String)>,
    pub added: Vec<AddedToken>,
    pub steps: Vec<PreStep>,
    pub normalizer: Normalizer,
    pub ignore_merges: bool,
    pub unk_token: Option<String>,
    pub fuse_unk: bool,
    /// Kept verbatim for [`Tokenizer::to_json`]; alignfw never adds template tokens itself.
    pub post_processor: Value,
    pub decoder: Value,
}

const NO_ID: u32 = u32::MAX;

/// Ids and their `(start, end)` byte offsets.
pub type IdsAndOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// A byte-level BPE tokenizer. Immutable once built, `Send + Sync`, cheap to share behind an `Arc`.
pub struct Tokenizer {
    uid: u64,
    /// id → Hugging Face spelling; `None` for holes in a sparse id space.
    spellings: Vec<Option<String>>,
    /// id → bytes it decodes to, flattened: bytes of id `i` are `id_bytes[id_offsets[i]..id_offsets[i + 1]]`.
    id_bytes: Vec<u8>,
    id_offsets: Vec<u32>,
    is_special: Vec<bool>,
    token_to_id: FxHashMap<String, u32>,
    /// Model vocabulary keyed by the bytes a token stands for (for `ignore_merges` and tiktoken ranks).
    bytes_to_id: FxHashMap<Vec<u8>, u32>,
    /// id of the single-byte token of each byte (`NO_ID` if the vocabulary lacks it).
    byte_ids: [u32; 256],
    merges: MergeMap,
    /// Long pieces start from character tokens (see [`chars`]); `None` when the vocabulary forbids it.
    char_starts: Option<chars::CharStarts>,
    parts: Parts,
    unk_id: Option<u32>,
    added: AddedVocab,
    /// The whole pre-tokenizer is one regex split with no prefix space: the fast path.
    single_split: Option<Pattern>,
    /// `Some(add_prefix_space)` when offsets are trimmed (a `ByteLevel` post-processor says so).
    trim_offsets: Option<bool>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.parts.merges.len())
            .field("added", &self.parts.added.len())
            .finish()
    }
}

impl Tokenizer {
    /// Builds a tokenizer, checking that every merge refers to tokens of the vocabulary.
    pub fn from_parts(parts: Parts) -> Result<Self> {
        static NEXT_UID: AtomicU64 = AtomicU64::new(1);
        unicode::init();
        let bl = bytelevel::byte_level();
        let mut token_to_id: FxHashMap<String, u32> = FxHashMap::default();
        let mut max_id: i64 = -1;
        for (tok, id) in &parts.vocab {
            if token_to_id.insert(tok.clone(), *id).is_some() {
                return Err(Error::TokenizerFormat(format!(
                    "token {tok:?} appears twice in the vocabulary"
                )));
            }
            max_id = max_id.max(*id as i64);
        }
        for t in &parts.added {
            max_id = max_id.max(t.id as i64);
        }
        let size = (max_id + 1) as usize;
        let n_tokens = parts.vocab.len() + parts.added.len();
        // Ids index dense tables; refuse ids so sparse that the tables would exhaust memory.
        if size >= NO_ID as usize || size > 16 * n_tokens + (1 << 20) {
            return Err(Error::TokenizerFormat(format!(
                "token id {max_id} is far beyond the {n_tokens} tokens of the file: ids must be dense (0..n)"
            )));
        }
        let mut spellings: Vec<Option<String>> = vec![None; size];
        for (tok, id) in &parts.vocab {
            if let Some(prev) = &spellings[*id as usize] {
                return Err(Error::TokenizerFormat(format!(
                    "tokens {prev:?} and {tok:?} share id {id}"
                )));
            }
            spellings[*id as usize] = Some(tok.clone());
        }
        let mut is_special = vec![false; size];
        for t in &parts.added {
            match &spellings[t.id as usize] {
                Some(s) if *s != t.content && token_to_id.get(s) == Some(&t.id) => {
                    return Err(Error::TokenizerFormat(format!(
                        "added token {:?} has id {}, which the vocabulary gives to {s:?}",
                        t.content, t.id
                    )))
                }
                _ => {}
            }
            spellings[t.id as usize] = Some(t.content.clone());
            token_to_id.insert(t.content.clone(), t.id);
            is_special[t.id as usize] = t.special;
        }
        let mut id_bytes = Vec::new();
        let mut id_offsets = Vec::with_capacity(size + 1);
        id_offsets.push(0u32);
        for s in &spellings {
            if let Some(s) = s {
                id_bytes.extend_from_slice(&bytelevel::token_bytes(s));
            }
            id_offsets.push(id_bytes.len() as u32);
        }
        let mut bytes_to_id = FxHashMap::default();
        for (tok, id) in &parts.vocab {
            if let Some(b) = bl.decode(tok) {
                bytes_to_id.insert(b, *id);
            }
        }
        let mut byte_ids = [NO_ID; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            if let Some(&id) = token_to_id.get(bl.byte_to_char[b].encode_utf8(&mut [0; 4]) as &str) {
                *slot = id;
            }
        }
        let mut merges = MergeMap::default();
        for (rank, (a, b)) in parts.merges.iter().enumerate() {
            let lookup = |t: &str| {
                token_to_id.get(t).copied().ok_or_else(|| {
                    Error::TokenizerFormat(format!(
                        "merge {rank} ({a:?} {b:?}): token {t:?} is not in the vocabulary"
                    ))
                })
            };
            let (ia, ib, im) = (lookup(a)?, lookup(b)?, lookup(&format!("{a}{b}"))?);
            merges.insert(ia, ib, rank as u32, im);
        }
        let char_starts = chars::CharStarts::new(
            &merges,
            &byte_ids,
            |id| &id_bytes[id_offsets[id as usize] as usize..id_offsets[id as usize + 1] as usize],
            bytes_to_id.iter().map(|(b, &id)| (b.as_slice(), id)),
        );
        let unk_id = match &parts.unk_token {
            Some(u) => Some(
                *token_to_id
                    .get(u)
                    .ok_or_else(|| Error::TokenizerFormat(format!("unk_token {u:?} is not in the vocabulary")))?,
            ),
            None => None,
        };
        let normalizer = parts.normalizer;
        let added = AddedVocab::new(parts.added.clone(), &|c| normalize(normalizer, c).into_owned())?;
        let single_split = match parts.steps.as_slice() {
            [PreStep::ByteLevel {
                add_prefix_space: false,
                use_regex: true,
                ..
            }] => Some(Pattern::Gpt2),
            [PreStep::Split(p), PreStep::ByteLevel {
                add_prefix_space: false,
                use_regex: false,
                ..
            }] => Some(p.clone()),
            _ => None,
        };
        Ok(Tokenizer {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            spellings,
            id_bytes,
            id_offsets,
            is_special,
            token_to_id,
            bytes_to_id,
            byte_ids,
            merges,
            char_starts,
            unk_id,
            added,
            single_split,
            trim_offsets: trims_offsets(&parts.post_processor),
            parts,
        })
    }

    /// Size of the id space: the largest id plus one (what an embedding table needs).
    pub fn vocab_size(&self) -> usize {
        self.spellings.len()
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.token_to_id.get(token).copied()
    }

    /// The Hugging Face spelling of `id` (byte-level characters for model tokens).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.spellings.get(id as usize).and_then(|s| s.as_deref())
    }

    /// The bytes token `id` decodes to.
    pub fn id_to_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        self.spellings.get(i)?.as_ref()?;
        Some(&self.id_bytes[self.id_offsets[i] as usize..self.id_offsets[i + 1] as usize])
    }

    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.parts.added
    }

    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The regex of the pre-tokenizer's split, if it has one.
    pub fn pattern(&self) -> Option<&str> {
        self.parts.steps.iter().find_map(|s| match s {
            PreStep::Split(p) => Some(p.as_str()),
            PreStep::ByteLevel { use_regex: true, .. } => Some(GPT2_PATTERN),
            _ => None,
        })
    }

    /// The model vocabulary without added tokens, as `(bytes, id)` sorted by id (what tiktoken calls
    /// mergeable ranks).
    pub fn byte_vocab(&self) -> Vec<(Vec<u8>, u32)> {
        let added: rustc_hash::FxHashSet<u32> = self.parts.added.iter().map(|t| t.id).collect();
        let mut v: Vec<(Vec<u8>, u32)> = self
            .bytes_to_id
            .iter()
            .filter(|(_, i)| !added.contains(i))
            .map(|(b, &i)| (b.clone(), i))
            .collect();
        v.sort_unstable_by_key(|x| x.1);
        v
    }

    // ----------------------------------------------------------------------------------------------
    // Encoding

    /// Encodes `text` to ids. Special tokens are recognised only if `allowed` allows them; non-special
    /// added tokens are always recognised (as Hugging Face does). Equals Hugging Face
    /// `Tokenizer.encode(text, add_special_tokens=False).ids` when every special token is allowed.
    pub fn encode(&self, text: &str, allowed: &AllowedSpecial) -> Result<Vec<u32>> {
        self.encode_literal(text, allowed, &[])
    }

    /// [`Self::encode`], except that no added token is matched over the `(start, end)` character
    /// spans `literal` of `text` ([`crate::added::Splitter::with_literal`]).
    pub fn encode_literal(&self, text: &str, allowed: &AllowedSpecial, literal: &[(usize, usize)]) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, allowed, literal, &mut out)?;
        Ok(out)
    }

    /// [`Self::encode_literal`] appending to `out`: a caller that encodes text after text into one
    /// buffer allocates nothing per text (nor writes to fresh pages).
    pub fn encode_into(
        &self,
        text: &str,
        allowed: &AllowedSpecial,
        literal: &[(usize, usize)],
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let splitter = self.splitter(allowed)?;
        let spans = match literal {
            [] => Vec::new(),
            _ => crate::added::literal_byte_spans(text, literal)?,
        };
        if spans.is_empty() {
            self.encode_with(text, &splitter, out)
        } else {
            self.encode_with(text, &splitter.with_literal(spans), out)
        }
    }

    fn splitter(&self, allowed: &AllowedSpecial) -> Result<Cow<'_, Splitter>> {
        let n = self.parts.normalizer;
        self.added.splitter(allowed, &|c| normalize(n, c).into_owned())
    }

    /// Hugging Face's order: tokens with `normalized = false` are split off the raw text, then tokens
    /// with `normalized = true` off each normalized stretch between them ([`crate::added`]).
    fn encode_with(&self, text: &str, splitter: &Splitter, out: &mut Vec<u32>) -> Result<()> {
        with_cache(self.uid, |cache| -> Result<()> {
            if splitter.is_empty() {
                return self.encode_segment(text, cache, out);
            }
            let mut result = Ok(());
            let mut on_raw = |piece: Piece| match piece {
                Piece::Token(id, _) => out.push(id),
                Piece::Text(r) if result.is_ok() => {
                    result = match &splitter.normalized {
                        None => self.encode_segment(&text[r], cache, out),
                        Some(m) => {
                            let seg = normalize(self.parts.normalizer, &text[r]);
                            let mut inner = Ok(());
                            m.split(&seg, &mut |p| match p {
                                Piece::Token(id, _) => out.push(id),
                                Piece::Text(r2) if inner.is_ok() => inner = self.encode_segment(&seg[r2], cache, out),
                                Piece::Text(_) => {}
                            });
                            inner
                        }
                    }
                }
                Piece::Text(_) => {}
            };
            match &splitter.raw {
                Some(m) => m.split(text, &mut on_raw),
                None => on_raw(Piece::Text(0..text.len())),
            }
            result
        })
    }

    /// One text of a batch, in a `Vec` of its own.
    fn encode_one(&self, text: &str, splitter: &Splitter) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_with(text, splitter, &mut out)?;
        Ok(out)
    }

    /// Ids and byte offsets into `text`, as Hugging Face's `Encoding.offsets` (before their conversion
    /// to characters): a token that ends or starts inside a character covers the whole character, and a
    /// `ByteLevel` post-processor with `trim_offsets` moves offsets off leading and trailing spaces.
    pub fn encode_with_offsets(&self, text: &str, allowed: &AllowedSpecial) -> Result<IdsAndOffsets> {
        let splitter = self.splitter(allowed)?;
        let (mut ids, mut offsets) = (Vec::new(), Vec::new());
        let mut result = Ok(());
        with_cache(self.uid, |cache| {
            let mut on_raw = |piece: Piece| match piece {
                Piece::Token(id, r) => {
                    ids.push(id);
                    offsets.push((r.start, r.end));
                }
                Piece::Text(r) if result.is_ok() => {
                    let mut n = Normalized::new(&text[r.clone()], r.start);
                    if self.parts.normalizer == Normalizer::Nfc {
                        n.nfc();
                    }
                    match &splitter.normalized {
                        None => result = self.offsets_segment(n, cache, &mut ids, &mut offsets),
                        Some(m) => {
                            let mut parts = Vec::new();
                            m.split(&n.text, &mut |p| parts.push(p));
                            for p in parts {
                                match p {
                                    Piece::Token(id, r2) => {
                                        let (a, b) = n.span(r2.start, r2.end);
                                        ids.push(id);
                                        offsets.push((a as usize, b as usize));
                                    }
                                    Piece::Text(r2) if result.is_ok() => {
                                        let seg = n.slice(r2.start, r2.end);
                                        result = self.offsets_segment(seg, cache, &mut ids, &mut offsets);
                                    }
                                    Piece::Text(_) => {}
                                }
                            }
                        }
                    }
                }
                Piece::Text(_) => {}
            };
            match &splitter.raw {
                Some(m) => m.split(text, &mut on_raw),
                None if text.is_empty() => {}
                None => on_raw(Piece::Text(0..text.len())),
            }
        });
        result?;
        if let Some(add_prefix_space) = self.trim_offsets {
            for (i, (&id, off)) in ids.iter().zip(offsets.iter_mut()).enumerate() {
                trim_offsets(self.id_to_token(id).unwrap_or_default(), i, off, add_prefix_space);
            }
        }
        Ok((ids, offsets))
    }

    /// Pre-tokenizes one normalized stretch (keeping alignments) and appends its tokens and offsets.
    fn offsets_segment(
        &self,
        n: Normalized,
        cache: &mut PieceCache,
        ids: &mut Vec<u32>,
        offsets: &mut Vec<(usize, usize)>,
    ) -> Result<()> {
        if n.is_empty() {
            return Ok(());
        }
        let mut pieces = vec![n];
        for step in &self.parts.steps {
            let mut next = Vec::with_capacity(pieces.len());
            for mut piece in pieces {
                let pattern = match step {
                    PreStep::Split(p) => Some(p),
                    PreStep::ByteLevel {
                        add_prefix_space,
                        use_regex,
                        ..
                    } => {
                        if *add_prefix_space && !piece.text.starts_with(' ') {
                            piece.prepend(" ");
                        }
                        use_regex.then_some(&Pattern::Gpt2)
                    }
                };
                match pattern {
                    Some(p) => {
                        let mut ranges = Vec::new();
                        p.split_ranges(&piece.text, &mut |a, b| ranges.push((a, b)))?;
                        next.extend(ranges.into_iter().map(|(a, b)| piece.slice(a, b)));
                    }
                    None => next.push(piece),
                }
            }
            pieces = next;
        }
        let mut piece_ids = Vec::new();
        for piece in &pieces {
            piece_ids.clear();
            self.encode_piece(piece.text.as_bytes(), cache, &mut piece_ids);
            let mut at = 0usize;
            for &id in &piece_ids {
                // Byte-level tokens stand for their bytes; an unknown byte for one byte.
                let len = match self.id_to_bytes(id) {
                    Some(b) if Some(id) != self.unk_id => b.len(),
                    _ => 1,
                };
                let end = (at + len).min(piece.text.len());
                let (a, b) = piece.span(at, end);
                ids.push(id);
                offsets.push((a as usize, b as usize));
                at = end;
            }
        }
        Ok(())
    }

    /// The pieces BPE would merge within, after normalization and pre-tokenization (added tokens are
    /// not split off: this shows the pre-tokenizer alone, as Hugging Face's `pre_tokenize_str`).
    pub fn pre_tokenize(&self, text: &str) -> Result<Vec<String>> {
        let mut pieces = Vec::new();
        self.for_each_piece(text, &mut |p| pieces.push(p.to_string()))?;
        Ok(pieces)
    }

    /// Normalizes, pre-tokenizes and merges one segment free of added tokens.
    fn encode_segment(&self, text: &str, cache: &mut PieceCache, out: &mut Vec<u32>) -> Result<()> {
        if let (Some(p), Normalizer::None) = (&self.single_split, self.parts.normalizer) {
            // Fast path: one regex split, no normalization, no prefix space.
            let mut sink = EncodePieces {
                tokenizer: self,
                text: text.as_bytes(),
                cache,
                out,
                pending: (0, 0, 0, 0),
            };
            p.split_ranges(text, &mut sink)?;
            sink.flush();
            return Ok(());
        }
        let mut pieces: Vec<String> = Vec::new();
        self.for_each_piece(text, &mut |p| pieces.push(p.to_string()))?;
        for piece in &pieces {
            self.encode_piece(piece.as_bytes(), cache, out);
        }
        Ok(())
    }

    /// Normalizes `text` and calls `f` on each pre-tokenized piece.
    fn for_each_piece(&self, text: &str, f: &mut dyn FnMut(&str)) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let text = normalize(self.parts.normalizer, text);
        if let Some(p) = &self.single_split {
            return p.split(&text, &mut |piece| f(piece));
        }
        // General path: apply each step to every piece in turn.
        let mut pieces: Vec<Cow<str>> = vec![text];
        for step in &self.parts.steps {
            let mut next: Vec<Cow<str>> = Vec::with_capacity(pieces.len());
            for piece in &pieces {
                match step {
                    PreStep::Split(p) => p.split(piece, &mut |x| next.push(Cow::Owned(x.to_string())))?,
                    PreStep::ByteLevel {
                        add_prefix_space,
                        use_regex,
                        ..
                    } => {
                        let piece: Cow<str> = if *add_prefix_space && !piece.starts_with(' ') {
                            Cow::Owned(format!(" {piece}"))
                        } else {
                            Cow::Borrowed(piece.as_ref())
                        };
                        if *use_regex {
                            Pattern::Gpt2.split(&piece, &mut |x| next.push(Cow::Owned(x.to_string())))?;
                        } else {
                            next.push(Cow::Owned(piece.into_owned()));
                        }
                    }
                }
            }
            pieces = next;
        }
        for piece in &pieces {
            f(piece);
        }
        Ok(())
    }

    /// BPE on one piece's bytes, through the cache. Single bytes go through it too: a test of their
    /// own, ahead of the cache, was a branch that the mixed lengths of pieces mispredicted
    /// (`callgrind --branch-sim=yes`: 6% of a pass' mispredictions).
    #[inline(always)]
    fn encode_piece(&self, piece: &[u8], cache: &mut PieceCache, out: &mut Vec<u32>) {
        match short_key(piece) {
            Some(k) => self.encode_piece_at(piece, k, key_hash(k), cache, out),
            None => self.encode_piece_uncached(piece, cache, out),
        }
    }

    /// [`Self::encode_piece`] given the piece's `short_key` `k` and that key's [`key_hash`] `h`: the
    /// common case, a piece seen before, is inlined into the pre-tokenizer's loop
    /// ([`EncodePieces`]); the rest is a call.
    #[inline(always)]
    fn encode_piece_at(&self, piece: &[u8], k: u128, h: u64, cache: &mut PieceCache, out: &mut Vec<u32>) {
        // The table holds final results, so `ignore_merges` needs no check here. At most three
        // quarters full, it mostly has a key in its home slot, which the scanner prefetched, or the
        // next one.
        let slot = cache.home_slot(h);
        let value = if slot.0 == k {
            slot.1
        } else {
            match cache.probe(k, h) {
                Some(v) => v,
                None => return self.encode_piece_uncached(piece, cache, out),
            }
        };
        match value >> 62 {
            1 => out.push(value as u32),
            2 => out.extend_from_slice(&[(value >> 31) as u32 & INLINE_ID_MASK, value as u32 & INLINE_ID_MASK]),
            _ => {
                let (start, len) = ((value >> 32) as u32 & 0x3fff_ffff, value as u32);
                out.extend_from_slice(&cache.arena[start as usize..(start + len) as usize]);
            }
        }
    }

    /// [`Self::encode_piece`] for a piece that is not in the table: pieces of 16 bytes or more go
    /// through their own map, new pieces are merged.
    #[inline(never)]
    fn encode_piece_uncached(&self, piece: &[u8], cache: &mut PieceCache, out: &mut Vec<u32>) {
        if self.parts.ignore_merges {
            if let Some(&id) = self.bytes_to_id.get(piece) {
                out.push(id);
                return;
            }
        }
        if piece.len() > MAX_CACHED_PIECE {
            self.merge_piece(piece, &mut cache.scratch_ids, &mut cache.scratch_pairs);
            out.extend_from_slice(&cache.scratch_ids);
            return;
        }
        let key = short_key(piece);
        if key.is_none() {
            if let Some(&(start, len)) = cache.long.get(piece) {
                out.extend_from_slice(&cache.arena[start as usize..(start + len) as usize]);
                return;
            }
        }
        self.merge_piece(piece, &mut cache.scratch_ids, &mut cache.scratch_pairs);
        out.extend_from_slice(&cache.scratch_ids);
        if cache.len + cache.long.len() >= MAX_CACHE_ENTRIES || cache.arena.len() >= MAX_CACHE_IDS {
            cache.clear();
        }
        let ids = &cache.scratch_ids;
        let start = cache.arena.len() as u32;
        let value = inline_value(ids).unwrap_or((3 << 62) | ((start as u64) << 32) | ids.len() as u64);
        if key.is_none() || value >> 62 == 3 {
            cache.arena.extend_from_slice(ids);
        }
        match key {
            Some(k) => cache.insert(k, value),
            None => {
                cache.long.insert(piece.into(), (start, ids.len() as u32));
            }
        }
    }

    /// BPE without the cache, into `ids`: byte symbols (unknown bytes become `unk` or are dropped, as
    /// in Hugging Face), then merges.
    fn merge_piece(&self, piece: &[u8], ids: &mut Vec<u32>, scratch: &mut Vec<(u32, u32)>) {
        if piece.len() > merge::HEAP_THRESHOLD {
            if let Some(starts) = &self.char_starts {
                if starts.start(piece, &self.byte_ids, ids) {
                    self.merges.apply(ids, scratch);
                    return;
                }
            }
        }
        ids.clear();
        for &b in piece {
            let id = self.byte_ids[b as usize];
            if id != NO_ID {
                ids.push(id);
            } else if let Some(unk) = self.unk_id {
                if !(self.parts.fuse_unk && ids.last() == Some(&unk)) {
                    ids.push(unk);
                }
            }
        }
        self.merges.apply(ids, scratch);
    }

    /// Encodes many texts in parallel on `num_threads` threads (rayon's global pool when `None`).
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: &AllowedSpecial,
        num_threads: Option<usize>,
    ) -> Result<Vec<Vec<u32>>> {
        let splitter = self.splitter(allowed)?;
        let splitter = splitter.as_ref();
        let one = |t: &S| self.encode_one(t.as_ref(), splitter);
        match num_threads {
            Some(1) => texts.iter().map(one).collect(),
            _ => crate::parallel::install(num_threads, || texts.par_iter().with_min_len(1).map(one).collect())?,
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Decoding

    fn check_id(&self, id: u32) -> Result<usize> {
        let i = id as usize;
        match self.spellings.get(i) {
            Some(Some(_)) => Ok(i),
            _ => Err(Error::Tokenize(format!(
                "id {id} is not in the vocabulary (ids run from 0 to {})",
                self.spellings.len().saturating_sub(1)
            ))),
        }
    }

    /// The concatenated bytes of `ids` (special tokens included unless `skip_special`).
    pub fn decode_bytes(&self, ids: &[u32], skip_special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let i = self.check_id(id)?;
            if skip_special && self.is_special[i] {
                continue;
            }
            out.extend_from_slice(&self.id_bytes[self.id_offsets[i] as usize..self.id_offsets[i + 1] as usize]);
        }
        Ok(out)
    }

    /// Decodes to text; bytes that are not valid UTF-8 (a token boundary inside a character) become
    /// U+FFFD, one per maximal invalid sequence, exactly as Hugging Face's `ByteLevel` decoder does.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let bytes = self.decode_bytes(ids, skip_special)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Decodes many sequences in parallel.
    pub fn decode_batch(&self, batch: &[Vec<u32>], skip_special: bool) -> Result<Vec<String>> {
        batch.par_iter().map(|ids| self.decode(ids, skip_special)).collect()
    }

    // ----------------------------------------------------------------------------------------------
    // Files

    /// Reads a Hugging Face `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        hf::from_json(json)
    }

    /// Reads GPT-2 style `vocab.json` + `merges.txt` contents. `pattern`: the pre-tokenizer regex;
    /// `special_tokens`: vocabulary entries (or new tokens, appended) to mark special.
    pub fn from_vocab_merges(
        vocab_json: &str,
        merges_txt: &str,
        pattern: Pattern,
        special_tokens: &[String],
    ) -> Result<Self> {
        hf::from_vocab_merges(vocab_json, merges_txt, pattern, special_tokens)
    }

    /// Writes a Hugging Face `tokenizer.json` (pretty-printed).
    pub fn to_json(&self) -> String {
        hf::to_json(self)
    }

    /// Trains a new tokenizer on text files, exactly as Hugging Face's `BpeTrainer` with the byte-level
    /// alphabet as its initial alphabet.
    pub fn train_from_files(files: &[String], config: &TrainerConfig) -> Result<Self> {
        train::train_from_files(files, config)
    }

    /// Trains on in-memory texts (each text is split into lines, as the file trainer does).
    pub fn train_from_texts<S: AsRef<str> + Sync>(texts: &[S], config: &TrainerConfig) -> Result<Self> {
        train::train_from_texts(texts, config)
    }
}

/// The encoder's fast path as the scanner's [`OnPiece`]: each piece goes through the cache.
struct EncodePieces<'a> {
    tokenizer: &'a Tokenizer,
    text: &'a [u8],
    cache: &'a mut PieceCache,
    out: &'a mut Vec<u32>,
    /// The piece the scanner found last, not encoded yet (`start == end`: none), with its
    /// `short_key` (0: none) and that key's [`key_hash`].
    pending: (usize, usize, u128, u64),
}

impl OnPiece for EncodePieces<'_> {
    /// Encodes the piece before this one, after asking for this one's home slot: the slot (a table of
    /// megabytes, past L2) arrives while the previous piece is encoded and the scanner finds the next.
    /// (The hash, not the slot, is kept: encoding the previous piece may grow the table.)
    #[inline(always)]
    fn on_piece(&mut self, start: usize, end: usize) {
        let (key, h) = match short_key_at(self.text, start, end) {
            Some(k) => {
                let h = key_hash(k);
                prefetch(self.cache.home_slot(h));
                (k, h)
            }
            None => (0, 0),
        };
        self.flush();
        self.pending = (start, end, key, h);
    }
}

impl EncodePieces<'_> {
    /// Encodes the pending piece, if any.
    #[inline(always)]
    fn flush(&mut self) {
        let (s, e, key, h) = self.pending;
        if s < e {
            let (t, piece) = (self.tokenizer, &self.text[s..e]);
            match key {
                0 => t.encode_piece_uncached(piece, self.cache, self.out),
                k => t.encode_piece_at(piece, k, h, self.cache, self.out),
            }
        }
    }
}

/// A hint that `*x` will be read soon; nothing on targets without one.
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, and `x` is a valid reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Hugging Face's `ByteLevel` post-processor with `trim_offsets`: offsets move off the leading and
/// trailing spaces (`Ġ`) of a token's spelling, except the one space `add_prefix_space` put before the
/// first token.
fn trim_offsets(spelling: &str, index: usize, off: &mut (usize, usize), add_prefix_space: bool) {
    let space = |c: &char| *c == '\u{120}' || c.is_whitespace();
    let mut leading = spelling.chars().take_while(space).count();
    let trailing = spelling.chars().rev().take_while(space).count();
    if leading > 0 {
        if (index == 0 || off.0 == 0) && add_prefix_space && leading == 1 {
            leading = 0;
        }
        off.0 = (off.0 + leading).min(off.1);
    }
    if trailing > 0 && off.1 >= trailing {
        off.1 = off.1.saturating_sub(trailing).max(off.0);
    }
}

/// `Some(add_prefix_space)` when the post-processor is (or contains) a `ByteLevel` with `trim_offsets`.
fn trims_offsets(post: &Value) -> Option<bool> {
    match post.get("type").and_then(Value::as_str) {
        Some("ByteLevel") if post.get("trim_offsets").and_then(Value::as_bool).unwrap_or(true) => {
            Some(post.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(true))
        }
        Some("Sequence") => post
            .get("processors")
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find_map(trims_offsets)),
        _ => None,
    }
}

/// `text` under the normalizer (borrowed when it changes nothing).
fn normalize(n: Normalizer, text: &str) -> Cow<'_, str> {
    match n {
        Normalizer::Nfc if is_nfc_quick(text.chars()) != IsNormalized::Yes => Cow::Owned(text.nfc().collect()),
        _ => Cow::Borrowed(text),
    }
}

// --------------------------------------------------------------------------------------------------
// Per-thread piece cache and thread pools

/// Pieces longer than this are not cached (they rarely repeat and would bloat the cache).
const MAX_CACHED_PIECE: usize = 128;
/// The cache is cleared when it reaches this many pieces or ids, bounding memory per thread and
/// tokenizer: at most 2^19 slots of 32 bytes (16 MiB, reached only by text of over 196 k distinct
/// short pieces), 4 MiB of ids and the long pieces' keys. A smaller bound is a cliff: the benchmark's
/// 24 MiB hold 134 k distinct pieces of up to 128 bytes, and a cache of 2^17 was cleared on every pass.
const MAX_CACHE_ENTRIES: usize = 1 << 18;
const MAX_CACHE_IDS: usize = 1 << 20;
/// Caches kept per thread (one per recently used tokenizer).
const MAX_CACHES_PER_THREAD: usize = 4;
/// Slots of a new cache's table (128 KiB); it doubles whenever it would be over three quarters full.
const MIN_SLOTS: usize = 1 << 12;
/// Ids stored inline in a slot use 31 bits.
const INLINE_ID_MASK: u32 = 0x7fff_ffff;

/// A `short_key`'s hash; its top bits index the table.
#[inline(always)]
fn key_hash(k: u128) -> u64 {
    ((k as u64) ^ ((k >> 64) as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A slot's value for one or two ids (tag 1 and 2, the ids inline); `None` for more (tag 3:
/// `(arena start, len)`).
#[inline(always)]
fn inline_value(ids: &[u32]) -> Option<u64> {
    match ids {
        [a] => Some((1 << 62) | *a as u64),
        [a, b] if *a <= INLINE_ID_MASK && *b <= INLINE_ID_MASK => Some((2 << 62) | ((*a as u64) << 31) | *b as u64),
        _ => None,
    }
}

/// Piece → ids. Pieces of up to 15 bytes (nearly all) are keyed inline by their `short_key` in one
/// open-addressing table with linear probing, whose slots hold one or two ids inline (most pieces of
/// natural text) or a range of the arena: a lookup is usually the prefetched home slot or the one
/// after it, and touches no key allocation. The table grows when it would be over three quarters
/// full: at half full it took twice the memory, and the alternating runs of `bpe_builds.py` put it
/// at 0.9x. (It replaced a direct-mapped table of 2 MiB in front of a `HashMap`: with the 44 k
/// distinct short pieces of the benchmark's 10 MiB, one piece in 15 missed the first level and paid
/// the map's two cache misses.) Longer pieces go through a map of their bytes.
struct PieceCache {
    /// `(short_key, value)`; key 0 marks an empty slot (a real key's last byte is its non-zero length).
    slots: Box<[(u128, u64)]>,
    /// `64 - log2(slots.len())`.
    shift: u32,
    /// Full slots.
    len: usize,
    long: FxHashMap<Box<[u8]>, (u32, u32)>,
    arena: Vec<u32>,
    scratch_ids: Vec<u32>,
    scratch_pairs: Vec<(u32, u32)>,
}

impl Default for PieceCache {
    fn default() -> Self {
        PieceCache {
            slots: vec![(0u128, 0u64); MIN_SLOTS].into_boxed_slice(),
            shift: 64 - MIN_SLOTS.trailing_zeros(),
            len: 0,
            long: FxHashMap::default(),
            arena: Vec::new(),
            scratch_ids: Vec::new(),
            scratch_pairs: Vec::new(),
        }
    }
}

impl PieceCache {
    /// The home slot of a key of hash `h`.
    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        (h >> self.shift) as usize
    }

    #[inline(always)]
    fn home_slot(&self, h: u64) -> &(u128, u64) {
        debug_assert_eq!(self.slots.len(), 1 << (64 - self.shift));
        // SAFETY: `h >> shift` is below `2^(64 - shift)`, the table's length (`insert` keeps them
        // together); without the bounds check the hot path is one load and one compare.
        unsafe { self.slots.get_unchecked(self.home(h)) }
    }

    /// The value of key `k` (hash `h`) past its home slot: a probe the hot path leaves out of line.
    #[inline(never)]
    fn probe(&self, k: u128, h: u64) -> Option<u64> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(h);
        loop {
            let (key, value) = self.slots[i];
            if key == k {
                return Some(value);
            }
            if key == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds (or replaces) a short piece's value, doubling the table first if it would be more than
    /// three quarters full.
    fn insert(&mut self, k: u128, value: u64) {
        if 4 * (self.len + 1) > 3 * self.slots.len() {
            let size = 2 * self.slots.len();
            let old = std::mem::replace(&mut self.slots, vec![(0u128, 0u64); size].into_boxed_slice());
            self.shift -= 1;
            self.len = 0;
            for &(k, v) in old.iter().filter(|s| s.0 != 0) {
                self.insert(k, v);
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key_hash(k));
        while self.slots[i].0 != 0 && self.slots[i].0 != k {
            i = (i + 1) & mask;
        }
        self.len += usize::from(self.slots[i].0 == 0);
        self.slots[i] = (k, value);
    }

    /// Empties the cache, keeping the table's size.
    fn clear(&mut self) {
        self.slots.fill((0, 0));
        self.len = 0;
        self.long.clear();
        self.arena.clear();
    }
}

/// The bytes of a piece of at most 15 bytes, zero-padded, with the length in the last byte.
///
/// Built from fixed-size (overlapping) loads rather than a variable-length copy, which compiles to a
/// `memcpy` call per piece (7% of encoding time).
#[inline(always)]
fn short_key(piece: &[u8]) -> Option<u128> {
    let n = piece.len();
    if n > 15 {
        return None;
    }
    let low = low_bytes(&piece[..n.min(8)]);
    let high = if n > 8 {
        // Bytes 8..n: the last 8 bytes, shifted to drop the ones `low` already holds.
        let last = u64::from_le_bytes(piece[n - 8..].try_into().expect("8 bytes"));
        last >> (8 * (16 - n))
    } else {
        0
    };
    Some(low as u128 | ((high | (n as u64) << 56) as u128) << 64)
}

/// `short_key(&text[start..end])`, from one 16-byte load where the text has 16 bytes from `start`:
/// without `short_key`'s branches on the length, which the mixed lengths of pieces mispredict.
#[inline(always)]
fn short_key_at(text: &[u8], start: usize, end: usize) -> Option<u128> {
    let n = end - start;
    match text.get(start..start + 16) {
        Some(w) if n <= 15 => Some(u128::from_le_bytes(w.try_into().expect("16 bytes")) & KEEP[n] | (n as u128) << 120),
        _ => short_key(&text[start..end]),
    }
}

/// `KEEP[n]`: the low `n` bytes of a `u128` (a table: a 128-bit shift by a variable is a dozen
/// instructions).
const KEEP: [u128; 16] = {
    let mut t = [0u128; 16];
    let mut n = 1;
    while n < 16 {
        t[n] = (1u128 << (8 * n)) - 1;
        n += 1;
    }
    t
};

/// Up to 8 bytes as a little-endian `u64`, zero-padded.
#[inline(always)]
fn low_bytes(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 4 {
        let first = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as u64;
        let last = u32::from_le_bytes(b[n - 4..].try_into().expect("4 bytes")) as u64;
        // `last` holds bytes n-4..n; keep those past byte 3.
        first | (last >> (8 * (8 - n))) << 32
    } else {
        let mut x = 0u64;
        for (i, &byte) in b.iter().enumerate() {
            x |= (byte as u64) << (8 * i);
        }
        x
    }
}

thread_local! {
    static CACHES: RefCell<Vec<(u64, PieceCache)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's cache for tokenizer `uid`. Lock-free: each thread owns its caches.
fn with_cache<R>(uid: u64, f: impl FnOnce(&mut PieceCache) -> R) -> R {
    CACHES.with(|cell| {
        let Ok(mut caches) = cell.try_borrow_mut() else {
            // Re-entered on this thread (cannot happen through the public API): run uncached.
            return f(&mut PieceCache::default());
        };
        let i = match caches.iter().position(|(u, _)| *u == uid) {
            Some(i) => i,
            None => {
                if caches.len() >= MAX_CACHES_PER_THREAD {
                    caches.remove(0);
                }
                caches.push((uid, PieceCache::default()));
                caches.len() - 1
            }
        };
        f(&mut caches[i].1)
    })
}

#[cfg(test)]
mod tests;

//! The subword tokenizer families that are not byte-level BPE (issue 14): WordPiece (BERT),
//! SentencePiece-style BPE (Llama 2, Mistral, Gemma) and Unigram (T5, ALBERT), read from a Hugging Face
//! `tokenizer.json` and encoding to the same ids and offsets as Hugging Face `tokenizers`.
//!
//! Pipeline of [`Tokenizer::encode`], Hugging Face's order:
//! 1. added tokens with `normalized = false` are split off the raw text ([`crate::added`]);
//! 2. each stretch between them is normalized ([`Normalizer`]), remembering where each byte came from
//!    ([`normalized::Normalized`]), and tokens with `normalized = true` are split off it;
//! 3. the rest is pre-tokenized ([`PreTokenizer`]) into words;
//! 4. the model ([`Model`]) turns each word into ids;
//! 5. with `add_special_tokens`, the post-processor's template adds its tokens (`[CLS] $A [SEP]`, `<s> $A`).
//!
//! Offsets are byte ranges of the caller's text (added template tokens get `(0, 0)`); see
//! [`char_offsets`] for Python's character offsets.

mod decoder;
mod json;
pub mod models;
pub mod normalized;
mod normalizer;
mod pre_tokenizer;
mod train;
mod train_unigram;
pub use self::decoder::Decoder;
pub use self::json::is_byte_level;
pub use self::normalizer::{NormStep, Normalizer};
pub use self::pre_tokenizer::{PreTokenizer, PrependScheme};
pub use self::train::{train_wordpiece, WordPieceTrainerConfig};
pub use self::train_unigram::{train_unigram, UnigramTrainerConfig};

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use self::models::{CharBpe, Tok, Unigram, WordPiece};
use self::normalized::Normalized;
use self::pre_tokenizer::{metaspace_edit, metaspace_split};
use crate::added::{AddedToken, AddedVocab, AllowedSpecial, Piece, Splitter};
use crate::error::{Error, Result};

/// The model of a tokenizer.
#[derive(Debug, Clone)]
pub enum Model {
    WordPiece(WordPiece),
    Bpe(CharBpe),
    Unigram(Unigram),
}

/// The post-processor's template for one sequence: ids before and after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    pub before: Vec<u32>,
    pub after: Vec<u32>,
}

/// Everything a [`Tokenizer`] is built from.
#[derive(Debug, Clone)]
pub struct Parts {
    pub normalizer: Normalizer,
    pub pre_tokenizer: Vec<PreTokenizer>,
    pub model: Model,
    /// id → spelling of the model's vocabulary (holes allowed).
    pub model_vocab: Vec<Option<String>>,
    pub added: Vec<AddedToken>,
    pub template: Template,
    /// `None`: tokens are joined with spaces, as Hugging Face does without a decoder.
    pub decoder: Option<Vec<Decoder>>,
}

/// Ids and byte offsets of one encoded text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

/// A WordPiece, SentencePiece-BPE or Unigram tokenizer. Immutable, `Send + Sync`.
#[derive(Debug)]
pub struct Tokenizer {
    parts: Parts,
    added: AddedVocab,
    /// id → spelling used when decoding (added tokens: their content, normalized if they are).
    spellings: Vec<Option<String>>,
    token_to_id: FxHashMap<String, u32>,
    special: FxHashSet<String>,
    json: String,
    family: &'static str,
    uid: u64,
    /// Every pre-tokenizer step only splits, but for a leading Metaspace: words can be byte ranges.
    ranges_only: bool,
    /// Encoding without offsets may skip the alignment: no Metaspace with `prepend_scheme="first"`
    /// ever sees a slice (whose original start only the alignment knows).
    untracked_ok: bool,
}

impl Tokenizer {
    pub fn from_parts(parts: Parts, json: String) -> Result<Self> {
        let normalizer = parts.normalizer.clone();
        let added = AddedVocab::new(parts.added.clone(), &|c| normalizer.normalize_str(c))?;
        let mut spellings = parts.model_vocab.clone();
        let mut token_to_id: FxHashMap<String, u32> = FxHashMap::default();
        for (i, s) in spellings.iter().enumerate() {
            if let Some(s) = s {
                token_to_id.insert(s.clone(), i as u32);
            }
        }
        let mut special = FxHashSet::default();
        for t in &parts.added {
            let i = t.id as usize;
            if i >= spellings.len() {
                if i > spellings.len() + 16 * parts.added.len() + (1 << 20) {
                    return Err(Error::TokenizerFormat(format!(
                        "added token {:?} has id {}, far beyond the vocabulary: ids must be dense",
                        t.content, t.id
                    )));
                }
                spellings.resize(i + 1, None);
            }
            let shown = if t.normalized {
                normalizer.normalize_str(&t.content)
            } else {
                t.content.clone()
            };
            spellings[i] = Some(shown);
            token_to_id.insert(t.content.clone(), t.id);
            if t.special {
                special.insert(t.content.clone());
            }
        }
        for id in parts.template.before.iter().chain(&parts.template.after) {
            if spellings.get(*id as usize).is_none_or(Option::is_none) {
                return Err(Error::TokenizerFormat(format!(
                    "post_processor adds id {id}, which is not in the vocabulary"
                )));
            }
        }
        let family = match &parts.model {
            Model::WordPiece(_) => "WordPiece",
            Model::Bpe(_) => "BPE",
            Model::Unigram(_) => "Unigram",
        };
        static NEXT_UID: AtomicU64 = AtomicU64::new(1);
        let ranges_only = parts
            .pre_tokenizer
            .iter()
            .skip(1)
            .all(|p| !matches!(p, PreTokenizer::Metaspace { .. }));
        let first_scheme = |p: &PreTokenizer| {
            matches!(
                p,
                PreTokenizer::Metaspace {
                    prepend_scheme: PrependScheme::First,
                    ..
                }
            )
        };
        let untracked_ok = !parts.pre_tokenizer.iter().any(first_scheme)
            || (ranges_only
                && parts.pre_tokenizer.iter().skip(1).all(|p| !first_scheme(p))
                && parts.added.iter().all(|t| !t.normalized));
        Ok(Tokenizer {
            parts,
            added,
            spellings,
            token_to_id,
            special,
            json,
            family,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            ranges_only,
            untracked_ok,
        })
    }

    /// Reads a Hugging Face `tokenizer.json`; unsupported components are named in the error.
    pub fn from_json(json: &str) -> Result<Self> {
        json::from_json(json)
    }

    /// The `tokenizer.json` this tokenizer was read from.
    pub fn to_json(&self) -> &str {
        &self.json
    }

    /// `"WordPiece"`, `"BPE"` (SentencePiece-style) or `"Unigram"`.
    pub fn family(&self) -> &'static str {
        self.family
    }

    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    pub fn vocab_size(&self) -> usize {
        self.spellings.len()
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.token_to_id.get(token).copied()
    }

    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.spellings.get(id as usize).and_then(|s| s.as_deref())
    }

    pub fn added_tokens(&self) -> &[AddedToken] {
        self.added.tokens()
    }

    fn splitter(&self, allowed: &AllowedSpecial) -> Result<Cow<'_, Splitter>> {
        let n = &self.parts.normalizer;
        self.added.splitter(allowed, &|c| n.normalize_str(c))
    }

    /// Encodes `text`: ids and byte offsets into `text`. Special tokens are recognised only as
    /// `allowed` says; with `add_special_tokens` the post-processor's template tokens are added.
    /// Equals Hugging Face `encode(text, add_special_tokens=...)` when every special token is allowed.
    pub fn encode(&self, text: &str, allowed: &AllowedSpecial, add_special_tokens: bool) -> Result<Encoding> {
        let splitter = self.splitter(allowed)?;
        self.encode_with(text, &splitter, add_special_tokens, true)
    }

    /// The ids of [`Tokenizer::encode`] alone (no alignment is tracked: faster).
    pub fn encode_ids(&self, text: &str, allowed: &AllowedSpecial, add_special_tokens: bool) -> Result<Vec<u32>> {
        let splitter = self.splitter(allowed)?;
        Ok(self.encode_with(text, &splitter, add_special_tokens, false)?.ids)
    }

    /// The ids of [`Tokenizer::encode`], except that no added token is matched over the
    /// `(start, end)` character spans `literal` of `text` ([`crate::added::Splitter::with_literal`]).
    pub fn encode_ids_literal(
        &self,
        text: &str,
        allowed: &AllowedSpecial,
        add_special_tokens: bool,
        literal: &[(usize, usize)],
    ) -> Result<Vec<u32>> {
        let spans = crate::added::literal_byte_spans(text, literal)?;
        if spans.is_empty() {
            return self.encode_ids(text, allowed, add_special_tokens);
        }
        let splitter = self.splitter(allowed)?.with_literal(spans);
        Ok(self.encode_with(text, &splitter, add_special_tokens, false)?.ids)
    }

    /// With `offsets == false` the returned offsets are meaningless.
    fn encode_with(
        &self,
        text: &str,
        splitter: &Splitter,
        add_special_tokens: bool,
        offsets: bool,
    ) -> Result<Encoding> {
        let mut enc = Encoding::default();
        if add_special_tokens {
            for &id in &self.parts.template.before {
                enc.ids.push(id);
                enc.offsets.push((0, 0));
            }
        }
        let mut result = Ok(());
        let mut on_raw = |piece: Piece| match piece {
            Piece::Token(id, r) => {
                enc.ids.push(id);
                enc.offsets.push((r.start, r.end));
            }
            Piece::Text(r) if result.is_ok() => {
                let mut n = if offsets || !self.untracked_ok {
                    Normalized::new(&text[r.clone()], r.start)
                } else {
                    Normalized::untracked(&text[r.clone()], r.start)
                };
                self.parts.normalizer.apply(&mut n);
                match &splitter.normalized {
                    None => result = self.encode_normalized(n, &mut enc),
                    Some(m) => {
                        let mut pieces = Vec::new();
                        m.split(&n.text, &mut |p| pieces.push(p));
                        for p in pieces {
                            match p {
                                Piece::Token(id, r2) => {
                                    let (s, e) = n.span(r2.start, r2.end);
                                    enc.ids.push(id);
                                    enc.offsets.push((s as usize, e as usize));
                                }
                                Piece::Text(r2) => {
                                    if result.is_ok() {
                                        result = self.encode_normalized(n.slice(r2.start, r2.end), &mut enc);
                                    }
                                }
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
        result?;
        if add_special_tokens {
            for &id in &self.parts.template.after {
                enc.ids.push(id);
                enc.offsets.push((0, 0));
            }
        }
        Ok(enc)
    }

    /// Pre-tokenizes and runs the model on one normalized stretch free of added tokens.
    fn encode_normalized(&self, n: Normalized, enc: &mut Encoding) -> Result<()> {
        if n.is_empty() {
            return Ok(());
        }
        with_cache(self.uid, |cache| {
            let WordCache { ranges, next, toks, .. } = cache;
            let (mut ranges, mut next, mut toks) = (std::mem::take(ranges), std::mem::take(next), std::mem::take(toks));
            let result = self.encode_normalized_with(n, enc, cache, &mut ranges, &mut next, &mut toks);
            (cache.ranges, cache.next, cache.toks) = (ranges, next, toks);
            result
        })
    }

    fn encode_normalized_with(
        &self,
        mut n: Normalized,
        enc: &mut Encoding,
        cache: &mut WordCache,
        ranges: &mut Vec<(usize, usize)>,
        next: &mut Vec<(usize, usize)>,
        toks: &mut Vec<Tok>,
    ) -> Result<()> {
        let steps = self.parts.pre_tokenizer.as_slice();
        if !self.ranges_only {
            // General path: a Metaspace after other steps edits each piece on its own.
            let mut words = vec![n];
            for step in steps {
                words = step.apply(words);
            }
            for w in &words {
                toks.clear();
                self.encode_word(&w.text, cache, toks)?;
                for &(id, s, e) in toks.iter() {
                    let (a, b) = w.span(s, e);
                    enc.ids.push(id);
                    enc.offsets.push((a as usize, b as usize));
                }
            }
            return Ok(());
        }
        // Fast path: words are byte ranges of one normalized string (no copy per word).
        ranges.clear();
        let mut rest = steps;
        match rest.first() {
            Some(PreTokenizer::Metaspace {
                replacement,
                prepend_scheme,
                split,
            }) => {
                metaspace_edit(&mut n, *replacement, *prepend_scheme);
                if *split {
                    metaspace_split(&n.text, *replacement, ranges);
                } else if !n.is_empty() {
                    ranges.push((0, n.text.len()));
                }
                rest = &rest[1..];
            }
            _ => ranges.push((0, n.text.len())),
        }
        for step in rest {
            next.clear();
            step.split_ranges(&n.text, ranges, next);
            std::mem::swap(ranges, next);
        }
        if let Model::Bpe(m) = &self.parts.model {
            if m.splits_at_metaspace {
                next.clear();
                for &r in ranges.iter() {
                    m.pieces(&n.text, r, &mut |p| next.push(p));
                }
                std::mem::swap(ranges, next);
            }
        }
        for &(ws, we) in ranges.iter() {
            toks.clear();
            self.encode_word(&n.text[ws..we], cache, toks)?;
            for &(id, s, e) in toks.iter() {
                let (a, b) = n.span(ws + s, ws + e);
                enc.ids.push(id);
                enc.offsets.push((a as usize, b as usize));
            }
        }
        Ok(())
    }

    /// The model's tokens of one word, through the per-thread word cache.
    fn encode_word(&self, word: &str, cache: &mut WordCache, out: &mut Vec<Tok>) -> Result<()> {
        let cacheable = word.len() <= MAX_CACHED_WORD;
        if cacheable {
            if let Some(&(start, len)) = cache.map.get(word) {
                out.extend(
                    cache.arena[start as usize..(start + len) as usize]
                        .iter()
                        .map(|&(id, s, e)| (id, s as usize, e as usize)),
                );
                return Ok(());
            }
        }
        let mark = out.len();
        match &self.parts.model {
            Model::WordPiece(m) => m.tokenize(word, out),
            Model::Bpe(m) => m.tokenize(word, out, &mut cache.ids, &mut cache.lens),
            Model::Unigram(m) => m.tokenize(word, out)?,
        }
        if cacheable {
            if cache.map.len() >= MAX_CACHED_WORDS {
                cache.map.clear();
                cache.arena.clear();
            }
            let start = cache.arena.len() as u32;
            cache
                .arena
                .extend(out[mark..].iter().map(|&(id, s, e)| (id, s as u32, e as u32)));
            cache.map.insert(word.into(), (start, (out.len() - mark) as u32));
        }
        Ok(())
    }

    /// Encodes many texts in parallel on `num_threads` threads (rayon's global pool when `None`).
    /// Offsets are computed only with `offsets` (else they are meaningless).
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: &AllowedSpecial,
        add_special_tokens: bool,
        offsets: bool,
        num_threads: Option<usize>,
    ) -> Result<Vec<Encoding>> {
        let splitter = self.splitter(allowed)?;
        let splitter = splitter.as_ref();
        let one = |t: &S| self.encode_with(t.as_ref(), splitter, add_special_tokens, offsets);
        match num_threads {
            Some(1) => texts.iter().map(one).collect(),
            _ => crate::parallel::install(num_threads, || texts.par_iter().map(one).collect())?,
        }
    }

    /// Decodes ids through the decoder (special tokens dropped with `skip_special`), as Hugging Face.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut tokens = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(s) = self.id_to_token(id) else {
                return Err(Error::Tokenize(format!(
                    "id {id} is not in the vocabulary (ids run from 0 to {})",
                    self.spellings.len().saturating_sub(1)
                )));
            };
            if skip_special && self.special.contains(s) {
                continue;
            }
            tokens.push(s.to_string());
        }
        Ok(match &self.parts.decoder {
            None => tokens.join(" "),
            Some(steps) => {
                for step in steps {
                    tokens = step.apply(tokens);
                }
                tokens.concat()
            }
        })
    }

    pub fn decode_batch(&self, batch: &[Vec<u32>], skip_special: bool) -> Result<Vec<String>> {
        batch.par_iter().map(|ids| self.decode(ids, skip_special)).collect()
    }
}

// --------------------------------------------------------------------------------------------------
// Per-thread word cache

/// Words longer than this are not cached.
const MAX_CACHED_WORD: usize = 64;
/// The cache is cleared when it holds this many words (bounding memory per thread and tokenizer).
const MAX_CACHED_WORDS: usize = 1 << 17;
/// Caches kept per thread (one per recently used tokenizer).
const MAX_CACHES_PER_THREAD: usize = 4;

/// Word → tokens (id, start, end within the word), plus scratch buffers reused across calls.
#[derive(Default)]
struct WordCache {
    map: FxHashMap<Box<str>, (u32, u32)>,
    arena: Vec<(u32, u32, u32)>,
    ranges: Vec<(usize, usize)>,
    next: Vec<(usize, usize)>,
    toks: Vec<Tok>,
    ids: Vec<u32>,
    lens: Vec<u32>,
}

thread_local! {
    static CACHES: RefCell<Vec<(u64, WordCache)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's cache for tokenizer `uid`.
fn with_cache<R>(uid: u64, f: impl FnOnce(&mut WordCache) -> R) -> R {
    CACHES.with(|cell| {
        let Ok(mut caches) = cell.try_borrow_mut() else {
            return f(&mut WordCache::default());
        };
        let i = match caches.iter().position(|(u, _)| *u == uid) {
            Some(i) => i,
            None => {
                if caches.len() >= MAX_CACHES_PER_THREAD {
                    caches.remove(0);
                }
                caches.push((uid, WordCache::default()));
                caches.len() - 1
            }
        };
        f(&mut caches[i].1)
    })
}

/// Byte offsets into `text` → character offsets (what Python indexes strings by).
pub fn char_offsets(text: &str, offsets: &[(usize, usize)]) -> Vec<(usize, usize)> {
    if text.is_ascii() {
        return offsets.to_vec();
    }
    let mut byte_to_char = vec![0usize; text.len() + 1];
    let mut n = 0;
    for (i, c) in text.char_indices() {
        for k in 0..c.len_utf8() {
            byte_to_char[i + k] = n;
        }
        n += 1;
    }
    byte_to_char[text.len()] = n;
    offsets
        .iter()
        .map(|&(a, b)| (byte_to_char[a.min(text.len())], byte_to_char[b.min(text.len())]))
        .collect()
}

#[cfg(test)]
mod tests;

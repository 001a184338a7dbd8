//! Unigram training: Hugging Face's `UnigramTrainer` (`models/unigram/trainer.rs`, itself
//! SentencePiece's `unigram_model_trainer.cc`) on a T5-style pipeline: NFKC, then `WhitespaceSplit`
//! and `Metaspace` (`▁` prepended to every word).
//!
//! 1. Count the words of each line, in parallel ([`super::train::count_words`]).
//! 2. Seed pieces: every character (scored by its count) and the frequent substrings of up to
//!    `max_piece_length` characters, scored by occurrences × length, the `seed_size` best overall.
//!    Hugging Face takes the substrings from the internal nodes of the suffix tree of the distinct
//!    words joined by a boundary (each word once, whatever its count): the substrings that occur at
//!    least twice and are followed by at least two different characters (a word's end counting as one,
//!    a substring always ending its words being no node). alignfw finds the same set exactly
//!    ([`frequent_substrings`]): it sorts the positions by their next `max_piece_length + 1`
//!    characters (up to the word's end) and walks the intervals of the longest-common-prefix array;
//!    those of depth up to `max_piece_length` are the same in the full suffix array.
//! 3. EM rounds: the E-step sums each piece's expected count over the words' lattices (forward-backward,
//!    in parallel), the M-step drops pieces expected less than 0.5 times and scores the rest
//!    `digamma(count) - digamma(total)` (the Bayesian EM both libraries use), `n_sub_iterations` times;
//!    then the pieces whose removal costs the least likelihood (each replaced by its second-best
//!    segmentation) are pruned, keeping `max(shrinking_factor × size, 1.1 × vocab_size)`, until at most
//!    `1.1 × vocab_size` remain.
//! 4. Finalize: every character of the corpus (scored a little below the lowest score if it was
//!    pruned), then the pieces in the trainer's order up to `vocab_size`, sorted by score; the special
//!    tokens come first (the unknown token at id 0 if it is not one of them).
//!
//! Hugging Face quirks kept so that the results agree: the pruning loss renormalizes with the number of
//! pieces where SentencePiece uses the length of the alternative segmentation; when the pieces without
//! alternatives already exceed the pruning target, every candidate is kept. Differences: the
//! characters missing from the model are added in code-point order (HF: hash-map order), the
//! E-step sums in a fixed order (HF's depends on its thread count), learned pieces equal to a
//! special token are skipped (HF would list them twice), the size never exceeds `vocab_size` (HF adds
//! every piece when the characters alone fill it) and a `vocab_size` below the characters plus the
//! special tokens is an error (HF only checks the characters). So alignfw's trainer is deterministic, and
//! `tests/tokenizer/test_training.py` bounds its difference from HF's.

use std::collections::BTreeSet;

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{json, Value};

use super::normalized::Normalized;
use super::train::{count_words, special_added_tokens};
use super::{NormStep, Normalizer, PreTokenizer, PrependScheme, Tokenizer};
use crate::error::{Error, Result};

/// Settings of [`train_unigram`] (Hugging Face's `UnigramTrainer` options of the same names).
#[derive(Debug, Clone)]
pub struct UnigramTrainerConfig {
    /// Final size, special tokens included.
    pub vocab_size: usize,
    /// Added first, with ids `0..n`, in this order.
    pub special_tokens: Vec<String>,
    /// The unknown token: its special token's id, or id 0 (added first) if it is not one.
    pub unk_token: String,
    pub n_sub_iterations: usize,
    pub shrinking_factor: f64,
    /// Longest piece, in characters.
    pub max_piece_length: usize,
    /// Seed pieces (characters and frequent substrings) the EM rounds start from.
    pub seed_size: usize,
}

impl Default for UnigramTrainerConfig {
    fn default() -> Self {
        UnigramTrainerConfig {
            vocab_size: 8000,
            special_tokens: vec!["<unk>".into()],
            unk_token: "<unk>".into(),
            n_sub_iterations: 2,
            shrinking_factor: 0.75,
            max_piece_length: 16,
            seed_size: 1_000_000,
        }
    }
}

const REPLACEMENT: char = '\u{2581}';
/// Score of an unknown character below the lowest piece (SentencePiece's `kUnkPenalty`).
const UNK_PENALTY: f64 = 10.0;
/// Pieces expected fewer times are dropped by the M-step.
const MIN_EXPECTED: f64 = 0.5;
/// Words per E-step chunk; the chunks' sums are added in order, whatever the thread count.
const CHUNK: usize = 512;

fn metaspace() -> PreTokenizer {
    PreTokenizer::Metaspace {
        replacement: REPLACEMENT,
        prepend_scheme: PrependScheme::Always,
        split: true,
    }
}

/// Trains a T5-style Unigram tokenizer on in-memory texts (each split into lines).
pub fn train_unigram<S: AsRef<str> + Sync>(texts: &[S], config: &UnigramTrainerConfig) -> Result<Tokenizer> {
    check_config(config)?;
    let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
    let words = count_unigram_words(&texts);
    if words.is_empty() {
        return Err(Error::InvalidInput(
            "the training corpus has no words (it is empty or only whitespace): give it some text".into(),
        ));
    }
    let required: BTreeSet<char> = words.iter().flat_map(|(w, _)| w.chars()).collect();
    let n_special = special_vocab(config).len();
    if required.len() + n_special > config.vocab_size {
        return Err(Error::InvalidInput(format!(
            "vocab_size {} cannot hold the corpus's {} distinct characters and {} special tokens: \
             use a vocab_size of at least {}",
            config.vocab_size,
            required.len(),
            n_special,
            required.len() + n_special
        )));
    }
    let mut pieces = seed_pieces(&words, config.max_piece_length, config.seed_size);
    let desired = config.vocab_size * 11 / 10;
    loop {
        for _ in 0..config.n_sub_iterations {
            let expected = e_step(&Lattices::new(&pieces), &words);
            pieces = m_step(&pieces, &expected);
        }
        if pieces.len() <= desired {
            break;
        }
        pieces = prune(&Lattices::new(&pieces), &pieces, &words, config);
    }
    let vocab = finalize(&pieces, &required, config);
    let json = to_json(&vocab, config);
    Tokenizer::from_json(&serde_json::to_string(&json).expect("JSON serializes"))
}

fn check_config(config: &UnigramTrainerConfig) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidInput(m));
    if !(config.shrinking_factor > 0.0 && config.shrinking_factor < 1.0) {
        return bad(format!(
            "shrinking_factor must be between 0 and 1 (exclusive), got {}",
            config.shrinking_factor
        ));
    }
    if config.max_piece_length == 0 {
        return bad("max_piece_length must be at least 1".into());
    }
    if config.unk_token.is_empty() || config.special_tokens.iter().any(String::is_empty) {
        return bad("special tokens and the unk_token must not be empty".into());
    }
    let mut seen = FxHashSet::default();
    if let Some(t) = config.special_tokens.iter().find(|t| !seen.insert(t.as_str())) {
        return bad(format!("special token {t:?} is listed twice"));
    }
    Ok(())
}

/// The special tokens in id order: `special_tokens`, after the `unk_token` if it is not one of them.
fn special_vocab(config: &UnigramTrainerConfig) -> Vec<String> {
    let mut out = Vec::with_capacity(config.special_tokens.len() + 1);
    if !config.special_tokens.contains(&config.unk_token) {
        out.push(config.unk_token.clone());
    }
    out.extend(config.special_tokens.iter().cloned());
    out
}

/// The corpus's words (NFKC, whitespace split, `▁` prepended) and their counts, sorted.
fn count_unigram_words(texts: &[&str]) -> Vec<(String, u64)> {
    let normalizer = Normalizer(vec![NormStep::Nfkc]);
    let raw = count_words(texts, &normalizer, &PreTokenizer::WhitespaceSplit);
    let meta = metaspace();
    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
    for (w, c) in raw {
        for piece in meta.apply(vec![Normalized::untracked(&w, 0)]) {
            *counts.entry(piece.text).or_insert(0) += c;
        }
    }
    let mut words: Vec<(String, u64)> = counts.into_iter().collect();
    words.par_sort_unstable();
    words
}

// --------------------------------------------------------------------------------------------------
// Seeds

/// Marks a word's end in [`frequent_substrings`] (above every code point).
const BOUNDARY: u32 = 0x11_0000;

/// Characters (by count, then code point, descending), then substrings (by occurrences × length, then
/// text, descending) up to `seed_size` pieces, as log-probabilities; index 0 is the unknown piece.
fn seed_pieces(words: &[(String, u64)], max_len: usize, seed_size: usize) -> Vec<(String, f64)> {
    let mut chars: FxHashMap<char, u64> = FxHashMap::default();
    for (w, c) in words {
        for ch in w.chars() {
            *chars.entry(ch).or_insert(0) += c;
        }
    }
    let mut chars: Vec<(u64, char)> = chars.into_iter().map(|(ch, n)| (n, ch)).collect();
    chars.sort_unstable_by(|a, b| b.cmp(a));
    let mut seeds: Vec<(String, f64)> = chars.iter().map(|&(n, ch)| (ch.to_string(), n as f64)).collect();
    for (score, s) in frequent_substrings(words, max_len) {
        seeds.push((s, score as f64));
        if seeds.len() >= seed_size {
            break;
        }
    }
    let logsum = seeds.iter().map(|(_, s)| s).sum::<f64>().ln();
    let mut pieces = Vec::with_capacity(seeds.len() + 1);
    pieces.push((String::new(), f64::NAN));
    pieces.extend(seeds.into_iter().map(|(s, n)| (s, n.ln() - logsum)));
    pieces
}

/// The suffix-tree nodes of 2 to `max_len` characters of the distinct words (each joined once, then a
/// boundary), scored occurrences × length, best first (ties: greater text first).
fn frequent_substrings(words: &[(String, u64)], max_len: usize) -> Vec<(u64, String)> {
    let mut flat: Vec<u32> = Vec::new();
    for (w, _) in words {
        flat.extend(w.chars().map(u32::from));
        flat.push(BOUNDARY);
    }
    // A position's key: its next `max_len + 1` characters, up to and including its word's boundary.
    let cap = max_len + 1;
    let key = |p: usize| {
        let end = (p + cap).min(flat.len());
        let stop = flat[p..end]
            .iter()
            .position(|&c| c == BOUNDARY)
            .map_or(end, |i| p + i + 1);
        &flat[p..stop]
    };
    let mut sa: Vec<u32> = (0..flat.len() as u32)
        .filter(|&p| flat[p as usize] != BOUNDARY)
        .collect();
    sa.par_sort_unstable_by(|&a, &b| key(a as usize).cmp(key(b as usize)));
    let lcp: Vec<u32> = (0..sa.len())
        .into_par_iter()
        .map(|i| {
            if i == 0 {
                return 0;
            }
            let (a, b) = (key(sa[i - 1] as usize), key(sa[i] as usize));
            a.iter().zip(b).take_while(|(x, y)| x == y).count() as u32
        })
        .collect();
    // Bottom-up walk of the lcp-intervals: each popped `(depth, lb)` spans `sa[lb..i]`.
    let mut out: Vec<(u64, String)> = Vec::new();
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    for i in 1..=sa.len() {
        let cur = lcp.get(i).map_or(0, |&h| h as usize);
        let mut lb = i - 1;
        while cur < stack.last().map_or(0, |t| t.0) {
            let (depth, l) = stack.pop().expect("stack holds the root");
            let start = sa[l] as usize;
            if (2..=max_len).contains(&depth) && flat[start + depth - 1] != BOUNDARY {
                let s: String = flat[start..start + depth]
                    .iter()
                    .map(|&c| char::from_u32(c).expect("a code point"))
                    .collect();
                out.push(((i - l) as u64 * depth as u64, s));
            }
            lb = l;
        }
        if cur > stack.last().map_or(0, |t| t.0) {
            stack.push((cur, lb));
        }
    }
    out.par_sort_unstable_by(|a, b| b.cmp(a));
    out
}

// --------------------------------------------------------------------------------------------------
// Lattices

/// One node of a word's lattice: the piece `id` over bytes `start..end`.
#[derive(Debug, Clone, Copy)]
struct Node {
    start: u32,
    end: u32,
    id: u32,
    score: f64,
}

/// The current pieces as a byte trie (the unknown piece, id 0, is never matched: it stands for
/// characters no piece covers).
struct Lattices {
    scores: Vec<f64>,
    edges: FxHashMap<(u32, u8), u32>,
    leaf: Vec<u32>,
    unk_score: f64,
}

impl Lattices {
    fn new(pieces: &[(String, f64)]) -> Self {
        let mut edges: FxHashMap<(u32, u8), u32> = FxHashMap::default();
        let mut leaf = vec![u32::MAX];
        let mut min_score = f64::INFINITY;
        for (id, (p, score)) in pieces.iter().enumerate().skip(1) {
            min_score = min_score.min(*score);
            let mut node = 0u32;
            for &b in p.as_bytes() {
                node = *edges.entry((node, b)).or_insert_with(|| {
                    leaf.push(u32::MAX);
                    leaf.len() as u32 - 1
                });
            }
            leaf[node as usize] = id as u32;
        }
        Lattices {
            scores: pieces.iter().map(|p| p.1).collect(),
            edges,
            leaf,
            unk_score: min_score - UNK_PENALTY,
        }
    }

    /// The nodes of `word`'s lattice by start, then length (an unknown node last at its start), as
    /// Hugging Face's lattice inserts them.
    fn nodes(&self, word: &str, out: &mut Vec<Node>) {
        out.clear();
        let bytes = word.as_bytes();
        for (start, ch) in word.char_indices() {
            let mblen = ch.len_utf8();
            let mut single = false;
            let mut node = 0u32;
            for (k, &b) in bytes[start..].iter().enumerate() {
                let Some(&next) = self.edges.get(&(node, b)) else {
                    break;
                };
                node = next;
                let id = self.leaf[node as usize];
                if id != u32::MAX {
                    out.push(Node {
                        start: start as u32,
                        end: (start + k + 1) as u32,
                        id,
                        score: self.scores[id as usize],
                    });
                    single |= k + 1 == mblen;
                }
            }
            if !single {
                out.push(Node {
                    start: start as u32,
                    end: (start + mblen) as u32,
                    id: 0,
                    score: self.unk_score,
                });
            }
        }
    }
}

/// `ln(exp(x) + exp(y))`, `y` alone when `x` is unset (Hugging Face's cut-off of 50 included).
fn log_sum_exp(x: Option<f64>, y: f64) -> f64 {
    let Some(x) = x else {
        return y;
    };
    let (lo, hi) = if x > y { (y, x) } else { (x, y) };
    if hi > lo + 50.0 {
        hi
    } else {
        hi + ((lo - hi).exp() + 1.0).ln()
    }
}

/// Scratch buffers of the forward-backward and Viterbi passes.
#[derive(Default)]
struct Scratch {
    nodes: Vec<Node>,
    alpha: Vec<Option<f64>>,
    beta: Vec<Option<f64>>,
    best: Vec<Option<(f64, usize)>>,
}

/// Adds `freq` × each node's marginal probability to `expected[id]` (forward-backward over the lattice).
fn add_marginals(s: &mut Scratch, len: usize, freq: f64, expected: &mut [f64], touched: &mut Vec<u32>) {
    let Scratch { nodes, alpha, beta, .. } = s;
    alpha.clear();
    alpha.resize(len + 1, None);
    beta.clear();
    beta.resize(len + 1, None);
    alpha[0] = Some(0.0);
    for n in nodes.iter() {
        let v = n.score + alpha[n.start as usize].expect("nodes come by start");
        alpha[n.end as usize] = Some(log_sum_exp(alpha[n.end as usize], v));
    }
    beta[len] = Some(0.0);
    // Starts from last to first; each start's nodes in their order.
    let mut hi = nodes.len();
    while hi > 0 {
        let start = nodes[hi - 1].start as usize;
        let mut lo = hi;
        while lo > 0 && nodes[lo - 1].start as usize == start {
            lo -= 1;
        }
        for n in &nodes[lo..hi] {
            let v = n.score + beta[n.end as usize].expect("nodes come by start");
            beta[start] = Some(log_sum_exp(beta[start], v));
        }
        hi = lo;
    }
    let z = alpha[len].expect("every character has a node");
    for n in nodes.iter() {
        let a = alpha[n.start as usize].expect("reached");
        let b = beta[n.end as usize].expect("reached");
        let slot = &mut expected[n.id as usize];
        if *slot == 0.0 {
            touched.push(n.id);
        }
        *slot += freq * (a + n.score + b - z).exp();
    }
}

/// The best segmentation's node indices (ties: the earliest-starting last node, as Hugging Face),
/// leaving out node `skip`; `None` when no path remains.
fn viterbi(s: &mut Scratch, len: usize, skip: Option<usize>, path: &mut Vec<usize>) -> Option<f64> {
    let Scratch { nodes, best, .. } = s;
    best.clear();
    best.resize(len + 1, None);
    best[0] = Some((0.0, usize::MAX));
    for (i, n) in nodes.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let Some((here, _)) = best[n.start as usize] else {
            continue;
        };
        let cand = here + n.score;
        let slot = &mut best[n.end as usize];
        if slot.is_none_or(|(b, _)| cand > b) {
            *slot = Some((cand, i));
        }
    }
    let (total, _) = best[len]?;
    path.clear();
    let mut end = len;
    while end > 0 {
        let (_, i) = best[end].expect("on the path");
        path.push(i);
        end = nodes[i].start as usize;
    }
    path.reverse();
    Some(total)
}

// --------------------------------------------------------------------------------------------------
// EM

/// Each piece's expected count over the corpus. Chunks of words are summed in parallel and their sums
/// added in order, so the result does not depend on the thread count.
fn e_step(lattices: &Lattices, words: &[(String, u64)]) -> Vec<f64> {
    let n = lattices.scores.len();
    let chunks: Vec<&[(String, u64)]> = words.chunks(CHUNK).collect();
    let mut expected = vec![0.0; n];
    let group = 4 * rayon::current_num_threads().max(1);
    for batch in chunks.chunks(group) {
        let partials: Vec<Vec<(u32, f64)>> = batch
            .par_iter()
            .map_init(
                || (Scratch::default(), vec![0.0; n], Vec::new()),
                |(s, acc, touched), chunk| {
                    for (w, c) in chunk.iter() {
                        lattices.nodes(w, &mut s.nodes);
                        add_marginals(s, w.len(), *c as f64, acc, touched);
                    }
                    touched
                        .drain(..)
                        .map(|id| (id, std::mem::take(&mut acc[id as usize])))
                        .collect()
                },
            )
            .collect();
        for p in partials {
            for (id, v) in p {
                expected[id as usize] += v;
            }
        }
    }
    expected
}

/// Hugging Face's `digamma` (asymptotic series after shifting `x` above 7).
fn digamma(mut x: f64) -> f64 {
    let mut r = 0.0;
    while x < 7.0 {
        r -= 1.0 / x;
        x += 1.0;
    }
    x -= 0.5;
    let xx = 1.0 / x;
    let xx2 = xx * xx;
    let xx4 = xx2 * xx2;
    r + x.ln() + xx2 / 24.0 - 7.0 / 960.0 * xx4 + 31.0 / 8064.0 * xx4 * xx2 - 127.0 / 30720.0 * xx4 * xx4
}

/// Drops pieces expected fewer than 0.5 times; scores the rest `digamma(count) - digamma(total)`.
fn m_step(pieces: &[(String, f64)], expected: &[f64]) -> Vec<(String, f64)> {
    let mut kept: Vec<(String, f64)> = vec![(pieces[0].0.clone(), f64::NAN)];
    let mut sum = 0.0;
    for ((p, _), &e) in pieces.iter().zip(expected).skip(1) {
        if e < MIN_EXPECTED {
            continue;
        }
        kept.push((p.clone(), e));
        sum += e;
    }
    let logsum = digamma(sum);
    for (i, (_, s)) in kept.iter_mut().enumerate() {
        if i > 0 {
            *s = digamma(*s) - logsum;
        }
    }
    kept
}

/// Keeps the pieces whose removal would cost the corpus the most likelihood.
fn prune(
    lattices: &Lattices,
    pieces: &[(String, f64)],
    words: &[(String, u64)],
    config: &UnigramTrainerConfig,
) -> Vec<(String, f64)> {
    // Each piece's second-best segmentation of itself: `None` when the piece is not its own best
    // segmentation (it can go), else the ids it would be replaced by (none for a single character).
    let alternatives: Vec<Option<Vec<u32>>> = (0..pieces.len())
        .into_par_iter()
        .map_init(
            || (Scratch::default(), Vec::new()),
            |(s, path), id| {
                if id == 0 {
                    return None;
                }
                let p = &pieces[id].0;
                lattices.nodes(p, &mut s.nodes);
                let whole = s
                    .nodes
                    .iter()
                    .position(|n| n.start == 0 && n.end as usize == p.len() && n.id as usize == id);
                // A single character has no other segmentation: it always stays.
                let Some(alt) = viterbi(s, p.len(), whole, path) else {
                    return Some(Vec::new());
                };
                if alt > pieces[id].1 {
                    return None;
                }
                Some(path.iter().map(|&i| s.nodes[i].id).collect())
            },
        )
        .collect();
    // Viterbi counts of every piece over the corpus (integers: exact in any order).
    let freq: Vec<u64> = words
        .par_chunks(CHUNK)
        .map_init(
            || (Scratch::default(), Vec::new()),
            |(s, path), chunk| {
                let mut freq = vec![0u64; pieces.len()];
                for (w, c) in chunk {
                    lattices.nodes(w, &mut s.nodes);
                    if viterbi(s, w.len(), None, path).is_some() {
                        for &i in path.iter() {
                            freq[s.nodes[i].id as usize] += c;
                        }
                    }
                }
                freq
            },
        )
        .reduce(
            || vec![0u64; pieces.len()],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let freq: Vec<f64> = freq.into_iter().map(|f| f as f64).collect();
    let vsum: f64 = words.iter().map(|(_, c)| *c as f64).sum();
    let sum: f64 = freq.iter().sum();
    let logsum = sum.ln();
    let mut kept: Vec<(String, f64)> = vec![pieces[0].clone()];
    let mut candidates: Vec<(usize, f64)> = Vec::new();
    for (id, piece) in pieces.iter().enumerate().skip(1) {
        match &alternatives[id] {
            None if freq[id] == 0.0 => {}
            None => kept.push(piece.clone()),
            Some(alt) if alt.is_empty() => kept.push(piece.clone()),
            Some(_) if freq[id] == 0.0 => {}
            Some(alt) => {
                let f = freq[id] / vsum;
                let logprob = freq[id].ln() - logsum;
                // Hugging Face renormalizes with the number of pieces (SentencePiece: `alt.len()`).
                let logsum_alt = (sum + freq[id] * (pieces.len() - 1) as f64).ln();
                let logprob_alt: f64 = alt
                    .iter()
                    .map(|&a| (freq[a as usize] + freq[id]).ln() - logsum_alt)
                    .sum();
                candidates.push((id, f * (logprob - logprob_alt)));
            }
        }
    }
    let desired = config.vocab_size * 11 / 10;
    let target = desired.max((pieces.len() as f64 * config.shrinking_factor) as usize);
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    // As Hugging Face: when `kept` is already over the target, every candidate stays.
    for (id, _) in candidates {
        if kept.len() == target {
            break;
        }
        kept.push(pieces[id].clone());
    }
    kept
}

/// The final `(piece, score)` list: the special tokens (score 0), then every character and the
/// trainer's pieces in order up to `vocab_size`, sorted by score.
fn finalize(pieces: &[(String, f64)], required: &BTreeSet<char>, config: &UnigramTrainerConfig) -> Vec<(String, f64)> {
    let specials = special_vocab(config);
    let scores: FxHashMap<&str, f64> = pieces.iter().skip(1).map(|(p, s)| (p.as_str(), *s)).collect();
    let min_score = pieces.iter().skip(1).map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut inserted: FxHashSet<String> = specials.iter().cloned().collect();
    let mut out: Vec<(String, f64)> = Vec::new();
    let mut penalty = 0.0;
    for ch in required {
        let c = ch.to_string();
        let score = match scores.get(c.as_str()) {
            Some(&s) => s,
            None => {
                let s = min_score + penalty;
                penalty += 0.0001;
                s
            }
        };
        inserted.insert(c.clone());
        out.push((c, score));
    }
    let room = config.vocab_size - specials.len();
    for (p, s) in pieces.iter().skip(1) {
        if out.len() >= room {
            break;
        }
        if inserted.insert(p.clone()) {
            out.push((p.clone(), *s));
        }
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    specials.into_iter().map(|s| (s, 0.0)).chain(out).collect()
}

/// The `tokenizer.json` of a trained Unigram vocabulary (T5's layout, NFKC for its charsmap).
fn to_json(vocab: &[(String, f64)], config: &UnigramTrainerConfig) -> Value {
    let specials = special_vocab(config);
    let unk_id = specials
        .iter()
        .position(|s| *s == config.unk_token)
        .expect("unk is special");
    let added = special_added_tokens(&specials);
    let metaspace = json!({"type": "Metaspace", "replacement": REPLACEMENT.to_string(),
                           "prepend_scheme": "always", "split": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "NFKC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]},
        "post_processor": null,
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": unk_id, "vocab": vocab, "byte_fallback": false}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::added::AllowedSpecial;

    fn words(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|&(w, c)| (w.to_string(), c)).collect()
    }

    #[test]
    fn substrings_are_the_suffix_tree_nodes() {
        // One word: "abracadabra"'s nodes are "abra" (2), "a" (5), "bra" (2) and "ra" (2).
        let got = frequent_substrings(&words(&[("abracadabra", 1)]), 16);
        assert_eq!(got, vec![(8, "abra".into()), (6, "bra".into()), (4, "ra".into())]);
        // "he" always ends its words: no node; "is " and "s " as Hugging Face's own test.
        let got = frequent_substrings(&words(&[("the", 1), ("she", 1)]), 16);
        assert!(got.is_empty(), "{got:?}");
        let got = frequent_substrings(&words(&[("This is a", 1), ("こんにちは友達", 1)]), 16);
        assert_eq!(got, vec![(6, "is ".into()), (4, "s ".into())]);
        // Nodes longer than max_piece_length ("abcde") are left out, shorter ones kept; "abc" and
        // "bcd" (always followed by the same character) are no nodes.
        let got = frequent_substrings(&words(&[("abcdef", 1), ("abcdeg", 1)]), 3);
        assert_eq!(got, vec![(6, "cde".into()), (4, "de".into())]);
    }

    #[test]
    fn seeds_match_hugging_face_scores() {
        let pieces = seed_pieces(&words(&[("This is a", 1), ("こんにちは友達", 1)]), 16, 1_000_000);
        let names: Vec<&str> = pieces[1..].iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            names,
            ["s", "i", " ", "達", "友", "ん", "は", "に", "ち", "こ", "h", "a", "T", "is ", "s "]
        );
        assert!((pieces[1].1 - -2.5649493574615367).abs() < 1e-9);
        assert!((pieces[14].1 - -1.4663370687934272).abs() < 1e-9);
    }

    #[test]
    fn marginals_sum_to_the_characters_covered() {
        let pieces: Vec<(String, f64)> = [("", f64::NAN), ("a", -1.0), ("b", -2.0), ("ab", -1.5)]
            .iter()
            .map(|&(p, s)| (p.to_string(), s))
            .collect();
        let lat = Lattices::new(&pieces);
        let mut s = Scratch::default();
        lat.nodes("abx", &mut s.nodes);
        let mut expected = vec![0.0; 4];
        add_marginals(&mut s, 3, 2.0, &mut expected, &mut Vec::new());
        // P(ab) = e^-1.5 / (e^-1.5 + e^-3); the unknown "x" is certain.
        let p_ab = (-1.5f64).exp() / ((-1.5f64).exp() + (-3.0f64).exp());
        assert!((expected[3] - 2.0 * p_ab).abs() < 1e-12);
        assert!((expected[1] - 2.0 * (1.0 - p_ab)).abs() < 1e-12);
        assert!((expected[0] - 2.0).abs() < 1e-12);
        let mut path = Vec::new();
        assert_eq!(viterbi(&mut s, 3, None, &mut path), Some(-1.5 + lat.unk_score));
        assert_eq!(path.iter().map(|&i| s.nodes[i].id).collect::<Vec<_>>(), [3, 0]);
    }

    #[test]
    fn trains_a_t5_style_vocabulary() {
        let text = "the cat sat on the mat; the cats sat on the mats\n".repeat(30);
        let config = UnigramTrainerConfig {
            vocab_size: 40,
            special_tokens: vec!["<pad>".into(), "</s>".into(), "<unk>".into()],
            ..UnigramTrainerConfig::default()
        };
        let t = train_unigram(&[text.as_str()], &config).unwrap();
        assert_eq!(t.family(), "Unigram");
        assert_eq!(t.token_to_id("<unk>"), Some(2));
        assert!(t.vocab_size() <= 40);
        // Hugging Face's trainer gives the same 19 pieces and scores on this text.
        assert_eq!(t.vocab_size(), 19);
        assert_eq!(t.token_to_id("▁"), Some(3));
        assert!(t.token_to_id("▁cat").is_some() && t.token_to_id("mat").is_some());
        let ids = t.encode("the cats", &AllowedSpecial::None, false).unwrap().ids;
        assert_eq!(t.decode(&ids, true).unwrap(), "the cats");
        let again = train_unigram(&[text.as_str()], &config).unwrap();
        assert_eq!(t.to_json(), again.to_json());
        let small = UnigramTrainerConfig {
            vocab_size: 10,
            ..config.clone()
        };
        assert!(matches!(
            train_unigram(&[text.as_str()], &small),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            train_unigram(&["  \n "], &config),
            Err(Error::InvalidInput(_))
        ));
    }
}

//! BPE training, merge for merge the algorithm of Hugging Face's `BpeTrainer` (`models/bpe/trainer.rs`)
//! with the 256 byte-level characters as the initial alphabet, so that the same corpus and settings give
//! the same vocabulary and merges.
//!
//! 1. Count pre-tokenized words, in parallel (each line pre-tokenized on its own, as HF's file reader does).
//! 2. Vocabulary: special tokens, then the byte alphabet sorted by code point of its spelling.
//! 3. Count adjacent pairs (weighted by word count) and the words each pair occurs in.
//! 4. Repeatedly pop the most frequent pair (ties: the smallest `(left, right)` ids) from a lazy max-heap,
//!    add the merged token, merge it inside the words that contain it, and update the pair counts
//!    incrementally from the changes at the merge sites.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use super::bytelevel::byte_level;
use super::hf::{byte_level_json, steps_for};
use super::{AddedToken, Normalizer, Parts, Pattern, Tokenizer};
use crate::error::{Error, Result};

/// Settings of [`Tokenizer::train_from_files`].
#[derive(Debug, Clone)]
pub struct TrainerConfig {
    /// Final vocabulary size, special tokens and the 256 byte tokens included.
    pub vocab_size: usize,
    /// Pairs seen fewer times than this are never merged.
    pub min_frequency: u64,
    /// Added first, with ids `0..n`, in this order.
    pub special_tokens: Vec<String>,
    pub pattern: Pattern,
}

pub(crate) type Pair = (u32, u32);

/// The id of `s`, added at the end of the vocabulary if new.
pub(crate) fn add_token(s: String, id_to_word: &mut Vec<String>, word_to_id: &mut FxHashMap<String, u32>) -> u32 {
    *word_to_id.entry(s.clone()).or_insert_with(|| {
        id_to_word.push(s);
        (id_to_word.len() - 1) as u32
    })
}

/// A heap entry, ordered as Hugging Face's: highest count first, then the smallest pair.
struct Merge {
    pair: Pair,
    count: u64,
    pos: FxHashSet<u32>,
}

impl PartialEq for Merge {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.pair == other.pair
    }
}
impl Eq for Merge {}
impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Merge {
    fn cmp(&self, other: &Self) -> Ordering {
        self.count.cmp(&other.count).then_with(|| other.pair.cmp(&self.pair))
    }
}

/// Word counts of `texts`, each split into lines (with their `\n`) and pre-tokenized.
fn count_words<'a>(texts: &[&'a str], pattern: &Pattern) -> Result<FxHashMap<&'a str, u64>> {
    let lines: Vec<&'a str> = texts.iter().flat_map(|t| t.split_inclusive('\n')).collect();
    lines
        .par_chunks(4096)
        .map(|chunk| -> Result<FxHashMap<&'a str, u64>> {
            let mut counts: FxHashMap<&'a str, u64> = FxHashMap::default();
            for line in chunk {
                pattern.split(line, &mut |w| *counts.entry(w).or_insert(0) += 1)?;
            }
            Ok(counts)
        })
        .try_reduce(FxHashMap::default, |mut a, b| {
            let (mut a, b) = if a.len() >= b.len() {
                (a, b)
            } else {
                (b, std::mem::take(&mut a))
            };
            for (k, v) in b {
                *a.entry(k).or_insert(0) += v;
            }
            Ok(a)
        })
}

/// Hugging Face's `Word::merge`: merges every non-overlapping `(a, b)`, left to right, and returns the
/// pair-count changes at the merge sites (the merged pair itself excluded, as in HF).
fn merge_word(word: &mut Vec<u32>, a: u32, b: u32, new_id: u32, changes: &mut Vec<(Pair, i32)>) {
    let mut i = 0;
    while i + 1 < word.len() {
        if word[i] == a && word[i + 1] == b {
            if i > 0 {
                changes.push(((word[i - 1], a), -1));
                changes.push(((word[i - 1], new_id), 1));
            }
            word[i] = new_id;
            word.remove(i + 1);
            if i + 1 < word.len() {
                changes.push(((b, word[i + 1]), -1));
                changes.push(((new_id, word[i + 1]), 1));
            }
        }
        i += 1;
    }
}

/// Merge sites above this many words are processed in parallel.
const PARALLEL_MERGE_WORDS: usize = 512;

fn train_words(word_counts: FxHashMap<&str, u64>, config: &TrainerConfig) -> Result<Tokenizer> {
    let bl = byte_level();
    let mut id_to_word: Vec<String> = Vec::with_capacity(config.vocab_size.min(1 << 20));
    let mut word_to_id: FxHashMap<String, u32> = FxHashMap::default();
    let add = add_token;
    for s in &config.special_tokens {
        if s.is_empty() {
            return Err(Error::InvalidInput("special tokens must not be empty".into()));
        }
        add(s.clone(), &mut id_to_word, &mut word_to_id);
    }
    let mut alphabet: Vec<char> = bl.byte_to_char.to_vec();
    alphabet.sort_unstable();
    let mut byte_id = [0u32; 256];
    for c in alphabet {
        let id = add(c.to_string(), &mut id_to_word, &mut word_to_id);
        byte_id[bl.byte_of(c).expect("alphabet char") as usize] = id;
    }

    let (words, counts): (Vec<Vec<u32>>, Vec<u64>) = word_counts
        .into_iter()
        .map(|(w, c)| (w.bytes().map(|b| byte_id[b as usize]).collect(), c))
        .unzip();
    let merges = learn_merges(
        words,
        &counts,
        &mut id_to_word,
        &mut word_to_id,
        config.vocab_size,
        config.min_frequency,
        None,
    );

    let n_special = config.special_tokens.len();
    let added = id_to_word[..n_special.min(id_to_word.len())]
        .iter()
        .map(|s| AddedToken::special(word_to_id[s], s))
        .collect::<Vec<_>>();
    Tokenizer::from_parts(Parts {
        vocab: id_to_word
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect(),
        merges: merges
            .iter()
            .map(|&(a, b)| (id_to_word[a as usize].clone(), id_to_word[b as usize].clone()))
            .collect(),
        added,
        steps: steps_for(config.pattern.clone()),
        normalizer: Normalizer::None,
        ignore_merges: false,
        unk_token: None,
        fuse_unk: false,
        post_processor: byte_level_json(),
        decoder: byte_level_json(),
    })
}

/// Hugging Face's `BpeTrainer` merge loop over `words` (symbol ids) with their `counts`: adds merged
/// tokens to the vocabulary until it holds `vocab_size` tokens or no pair is seen `min_frequency` times,
/// and returns the merges in order. With `prefix` (WordPiece's `##`), a merged token drops the prefix of
/// its right part, as HF's trainer with `continuing_subword_prefix` does.
pub(crate) fn learn_merges(
    mut words: Vec<Vec<u32>>,
    counts: &[u64],
    id_to_word: &mut Vec<String>,
    word_to_id: &mut FxHashMap<String, u32>,
    vocab_size: usize,
    min_frequency: u64,
    prefix: Option<&str>,
) -> Vec<Pair> {
    // Pair counts and, per pair, the words it occurs in.
    let (mut pair_counts, where_to_update) = words
        .par_iter()
        .enumerate()
        .fold(
            || {
                (
                    FxHashMap::<Pair, i64>::default(),
                    FxHashMap::<Pair, FxHashSet<u32>>::default(),
                )
            },
            |(mut pc, mut wtu), (i, w)| {
                for win in w.windows(2) {
                    let pair = (win[0], win[1]);
                    *pc.entry(pair).or_insert(0) += counts[i] as i64;
                    wtu.entry(pair).or_default().insert(i as u32);
                }
                (pc, wtu)
            },
        )
        .reduce(
            || (FxHashMap::default(), FxHashMap::default()),
            |(mut pc, mut wtu), (pc2, wtu2)| {
                for (k, v) in pc2 {
                    *pc.entry(k).or_insert(0) += v;
                }
                for (k, v) in wtu2 {
                    let e = wtu.entry(k).or_default();
                    if e.len() < v.len() {
                        let small = std::mem::replace(e, v);
                        e.extend(small);
                    } else {
                        e.extend(v);
                    }
                }
                (pc, wtu)
            },
        );
    let mut queue: BinaryHeap<Merge> = where_to_update
        .into_iter()
        .filter_map(|(pair, pos)| {
            let count = pair_counts[&pair];
            (count > 0).then_some(Merge {
                pair,
                count: count as u64,
                pos,
            })
        })
        .collect();

    let mut merges: Vec<Pair> = Vec::new();
    let mut changes: Vec<(Pair, i32)> = Vec::new();
    let mut where_to_update: FxHashMap<Pair, FxHashSet<u32>> = FxHashMap::default();
    while word_to_id.len() < vocab_size {
        let Some(mut top) = queue.pop() else { break };
        let current = pair_counts[&top.pair].max(0) as u64;
        if top.count != current {
            top.count = current;
            queue.push(top);
            continue;
        }
        if top.count < 1 || min_frequency > top.count {
            break;
        }
        let (left, right) = (&id_to_word[top.pair.0 as usize], &id_to_word[top.pair.1 as usize]);
        let right = match prefix {
            Some(p) => right.strip_prefix(p).unwrap_or(right),
            None => right,
        };
        let new_token = format!("{left}{right}");
        let new_id = add_token(new_token, id_to_word, word_to_id);
        merges.push(top.pair);

        // Merge inside every word that had the pair; collect the changes with the word they happened in.
        let (a, b) = top.pair;
        let mut site_changes: Vec<(Pair, i32, u32)> = Vec::new();
        if top.pos.len() >= PARALLEL_MERGE_WORDS {
            let mut taken: Vec<(u32, Vec<u32>)> = top
                .pos
                .iter()
                .map(|&i| (i, std::mem::take(&mut words[i as usize])))
                .collect();
            let per_word: Vec<Vec<(Pair, i32, u32)>> = taken
                .par_iter_mut()
                .with_min_len(64)
                .map(|(i, w)| {
                    let mut c = Vec::new();
                    merge_word(w, a, b, new_id, &mut c);
                    c.into_iter().map(|(p, d)| (p, d, *i)).collect()
                })
                .collect();
            for (i, w) in taken {
                words[i as usize] = w;
            }
            site_changes.extend(per_word.into_iter().flatten());
        } else {
            for &i in &top.pos {
                changes.clear();
                merge_word(&mut words[i as usize], a, b, new_id, &mut changes);
                site_changes.extend(changes.iter().map(|&(p, d)| (p, d, i)));
            }
        }
        for (pair, change, iw) in site_changes {
            *pair_counts.entry(pair).or_insert(0) += change as i64 * counts[iw as usize] as i64;
            if change > 0 {
                where_to_update.entry(pair).or_default().insert(iw);
            }
        }
        for (pair, pos) in where_to_update.drain() {
            let count = pair_counts[&pair];
            if count > 0 {
                queue.push(Merge {
                    pair,
                    count: count as u64,
                    pos,
                });
            }
        }
    }
    merges
}

fn check_config(config: &TrainerConfig) -> Result<()> {
    let min = 256 + config.special_tokens.len();
    if config.vocab_size < min {
        return Err(Error::InvalidInput(format!(
            "vocab_size {} is too small: the 256 byte tokens and {} special tokens need {min}",
            config.vocab_size,
            config.special_tokens.len()
        )));
    }
    Ok(())
}

pub(super) fn train_from_texts<S: AsRef<str> + Sync>(texts: &[S], config: &TrainerConfig) -> Result<Tokenizer> {
    check_config(config)?;
    let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
    train_words(count_words(&texts, &config.pattern)?, config)
}

pub(super) fn train_from_files(files: &[String], config: &TrainerConfig) -> Result<Tokenizer> {
    check_config(config)?;
    if files.is_empty() {
        return Err(Error::InvalidInput("no training files given".into()));
    }
    let contents: Vec<String> = files
        .par_iter()
        .map(|f| {
            let bytes = std::fs::read(f).map_err(|e| Error::Io(format!("cannot read training file {f:?}: {e}")))?;
            String::from_utf8(bytes).map_err(|e| {
                Error::InvalidInput(format!(
                    "training file {f:?} is not valid UTF-8 (at byte {})",
                    e.utf8_error().valid_up_to()
                ))
            })
        })
        .collect::<Result<_>>()?;
    let texts: Vec<&str> = contents.iter().map(String::as_str).collect();
    train_words(count_words(&texts, &config.pattern)?, config)
}

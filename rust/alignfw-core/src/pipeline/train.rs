//! WordPiece training: Hugging Face's `WordPieceTrainer` (a `BpeTrainer` with the `##` continuing
//! prefix, `models/wordpiece/trainer.rs` and `models/bpe/trainer.rs`) on BERT's normalizer and
//! pre-tokenizer.
//!
//! 1. Count the words of each line (BERT normalization, `BertPreTokenizer`), in parallel.
//! 2. Vocabulary: special tokens; the alphabet (the `limit_alphabet` most frequent characters if set),
//!    sorted by code point; then each character's `##` form, as words first use it.
//! 3. The BPE merge loop ([`crate::bpe::train::learn_merges`]): most frequent pair first, ties to the
//!    smallest pair of ids; a merged token drops its right part's `##`.
//!
//! Hugging Face's trainer is not deterministic: it numbers the `##` forms, and so breaks ties between
//! equally frequent pairs, in hash-map order, which changes from run to run (two HF runs on the same
//! corpus give different vocabularies). alignfw numbers them in the words' sorted order, so its result
//! is one of the vocabularies HF can produce up to those ties; `tests/tokenizer/test_training.py`
//! bounds the difference.

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde_json::{json, Map, Value};

use super::normalized::Normalized;
use super::{NormStep, Normalizer, PreTokenizer, Tokenizer};
use crate::bpe::train::{add_token, learn_merges};
use crate::error::{Error, Result};

/// Settings of [`train_wordpiece`] (Hugging Face's `WordPieceTrainer` options of the same names).
#[derive(Debug, Clone)]
pub struct WordPieceTrainerConfig {
    pub vocab_size: usize,
    pub min_frequency: u64,
    /// Added first, with ids `0..n`, in this order; must include `unk_token`.
    pub special_tokens: Vec<String>,
    pub limit_alphabet: Option<usize>,
    pub unk_token: String,
    /// BERT uncased (lowercase and strip accents) or cased.
    pub lowercase: bool,
}

/// Word counts of `texts` (each split into lines) under `normalizer` and `pre`.
pub(super) fn count_words(texts: &[&str], normalizer: &Normalizer, pre: &PreTokenizer) -> FxHashMap<String, u64> {
    let lines: Vec<&str> = texts.iter().flat_map(|t| t.lines()).collect();
    lines
        .par_chunks(2048)
        .map(|chunk| {
            let mut counts: FxHashMap<String, u64> = FxHashMap::default();
            let mut ranges = Vec::new();
            for line in chunk {
                let mut n = Normalized::untracked(line, 0);
                normalizer.apply(&mut n);
                ranges.clear();
                pre.split_ranges(&n.text, &[(0, n.text.len())], &mut ranges);
                for &(a, b) in &ranges {
                    match counts.get_mut(&n.text[a..b]) {
                        Some(c) => *c += 1,
                        None => {
                            counts.insert(n.text[a..b].to_string(), 1);
                        }
                    }
                }
            }
            counts
        })
        .reduce(FxHashMap::default, |mut a, b| {
            let (mut a, b) = if a.len() >= b.len() {
                (a, b)
            } else {
                (b, std::mem::take(&mut a))
            };
            for (k, v) in b {
                *a.entry(k).or_insert(0) += v;
            }
            a
        })
}

/// Trains a BERT-style WordPiece tokenizer on in-memory texts.
pub fn train_wordpiece<S: AsRef<str> + Sync>(texts: &[S], config: &WordPieceTrainerConfig) -> Result<Tokenizer> {
    if !config.special_tokens.contains(&config.unk_token) {
        return Err(Error::InvalidInput(format!(
            "special_tokens must include the unk_token {:?}",
            config.unk_token
        )));
    }
    if config.special_tokens.iter().any(String::is_empty) {
        return Err(Error::InvalidInput("special tokens must not be empty".into()));
    }
    let normalizer = Normalizer(vec![NormStep::Bert {
        clean_text: true,
        handle_chinese_chars: true,
        strip_accents: config.lowercase,
        lowercase: config.lowercase,
    }]);
    let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
    let counts = count_words(&texts, &normalizer, &PreTokenizer::Bert);

    let mut id_to_word: Vec<String> = Vec::new();
    let mut word_to_id: FxHashMap<String, u32> = FxHashMap::default();
    for s in &config.special_tokens {
        add_token(s.clone(), &mut id_to_word, &mut word_to_id);
    }
    // The alphabet, weighted by word counts; the least frequent characters go first when limited.
    let mut alphabet: FxHashMap<char, u64> = FxHashMap::default();
    for (w, &c) in &counts {
        for ch in w.chars() {
            *alphabet.entry(ch).or_insert(0) += c;
        }
    }
    let mut kept: Vec<(char, u64)> = alphabet.into_iter().collect();
    if let Some(limit) = config.limit_alphabet {
        if kept.len() > limit {
            kept.sort_unstable_by_key(|&(ch, n)| (n, ch));
            kept.drain(..kept.len() - limit);
        }
    }
    kept.sort_unstable_by_key(|&(ch, _)| ch);
    for (ch, _) in &kept {
        add_token(ch.to_string(), &mut id_to_word, &mut word_to_id);
    }
    // Words as symbols (characters outside the alphabet are dropped, as HF does), in sorted order.
    let mut sorted: Vec<(&String, &u64)> = counts.iter().collect();
    sorted.sort_unstable();
    let mut words = Vec::with_capacity(sorted.len());
    let mut word_counts = Vec::with_capacity(sorted.len());
    for (w, &c) in sorted {
        let mut symbols = Vec::with_capacity(w.len());
        for (i, ch) in w.char_indices() {
            let s = ch.to_string();
            if !word_to_id.contains_key(&s) {
                continue;
            }
            let s = if i == 0 { s } else { format!("##{s}") };
            symbols.push(add_token(s, &mut id_to_word, &mut word_to_id));
        }
        words.push(symbols);
        word_counts.push(c);
    }
    learn_merges(
        words,
        &word_counts,
        &mut id_to_word,
        &mut word_to_id,
        config.vocab_size,
        config.min_frequency,
        Some("##"),
    );
    Tokenizer::from_json(&serde_json::to_string(&to_json(&id_to_word, config)).expect("JSON serializes"))
}

/// The `added_tokens` entries of a trained file: `specials`, special and not normalized, ids `0..n`.
pub(super) fn special_added_tokens(specials: &[String]) -> Vec<Value> {
    specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect()
}

/// The `tokenizer.json` of a trained WordPiece vocabulary (BERT's layout).
fn to_json(id_to_word: &[String], config: &WordPieceTrainerConfig) -> Value {
    let vocab: Map<String, Value> = id_to_word
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), json!(i)))
        .collect();
    let added = special_added_tokens(&config.special_tokens);
    let has = |t: &str| config.special_tokens.iter().position(|s| s == t);
    let post = match (has("[CLS]"), has("[SEP]")) {
        (Some(cls), Some(sep)) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [cls], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [sep], "tokens": ["[SEP]"]}}
        }),
        _ => Value::Null,
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": config.lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": post,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": config.unk_token, "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::added::AllowedSpecial;

    #[test]
    fn trains_bert_vocabulary_with_continuing_prefix() {
        let text = "Unaffable affable unaffable. Affordable ABLE able table tables\n".repeat(20);
        let config = WordPieceTrainerConfig {
            vocab_size: 60,
            min_frequency: 0,
            special_tokens: vec!["[PAD]".into(), "[UNK]".into(), "[CLS]".into(), "[SEP]".into()],
            limit_alphabet: None,
            unk_token: "[UNK]".into(),
            lowercase: true,
        };
        let t = train_wordpiece(&[text.as_str()], &config).unwrap();
        assert_eq!(t.family(), "WordPiece");
        assert_eq!(t.token_to_id("[PAD]"), Some(0));
        // The alphabet follows the specials, sorted: '.' first, then the letters.
        assert_eq!(t.id_to_token(4), Some("."));
        assert!(t.token_to_id("##b").is_some() && t.token_to_id("able").is_some());
        let ids = t.encode("unaffable tables", &AllowedSpecial::None, true).unwrap().ids;
        assert_eq!(ids[0], 2);
        assert_eq!(t.decode(&ids, true).unwrap(), "unaffable tables");
        assert!(ids.len() < 10, "{ids:?}");
        let bad = WordPieceTrainerConfig {
            special_tokens: vec!["[PAD]".into()],
            ..config
        };
        assert!(matches!(
            train_wordpiece(&[text.as_str()], &bad),
            Err(Error::InvalidInput(_))
        ));
    }
}

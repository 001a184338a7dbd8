//! Reading a Hugging Face `tokenizer.json` into the pipeline's [`Parts`].
//!
//! Supported: models `WordPiece`, `BPE` (character-level, with byte fallback; byte-level BPE is
//! [`crate::bpe`]'s) and `Unigram`; normalizers `BertNormalizer`, `Lowercase`, `NFD`, `NFC`, `NFKD`,
//! `NFKC`, `StripAccents`, `Strip`, `Prepend`, `Replace` (string or regex), `Precompiled`
//! (SentencePiece charsmaps) and `Sequence`;
//! pre-tokenizers `BertPreTokenizer`, `Whitespace`, `WhitespaceSplit`, `Metaspace`, `Digits`,
//! `Punctuation` (isolated) and `Sequence`; post-processors `BertProcessing`, `RobertaProcessing` and
//! `TemplateProcessing` (single sequences); decoders `WordPiece`, `Metaspace`, `ByteFallback`, `Fuse`,
//! `Strip`, `Replace` and `Sequence`. Anything else is an [`Error::TokenizerFormat`] naming it.

use rustc_hash::FxHashMap;
use serde_json::Value;

use super::models::{CharBpe, Unigram, WordPiece};
use super::{Decoder, Model, NormStep, Normalizer, Parts, PreTokenizer, PrependScheme, Template, Tokenizer};
use crate::added::AddedToken;
use crate::bpe::MergeMap;
use crate::error::{Error, Result};

fn fmt_err(msg: impl Into<String>) -> Error {
    Error::TokenizerFormat(msg.into())
}

fn type_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

fn bool_field(obj: &Value, key: &str, default: bool) -> Result<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(fmt_err(format!("field {key:?} must be a boolean, got {other}"))),
    }
}

fn str_field<'a>(obj: &'a Value, key: &str, what: &str) -> Result<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| fmt_err(format!("{what} has no string field {key:?}")))
}

fn one_char(s: &str, what: &str) -> Result<char> {
    let mut it = s.chars();
    match (it.next(), it.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(fmt_err(format!("{what} must be one character, got {s:?}"))),
    }
}

/// `{"String": s}` patterns; regex patterns are refused (none of the supported families needs one).
fn string_pattern(v: &Value, what: &str) -> Result<String> {
    let p = v
        .get("pattern")
        .ok_or_else(|| fmt_err(format!("{what} has no \"pattern\"")))?;
    match (
        p.get("String").and_then(Value::as_str),
        p.get("Regex").and_then(Value::as_str),
    ) {
        (Some(s), _) => Ok(s.to_string()),
        (None, Some(r)) => Err(fmt_err(format!(
            "unsupported {what} with a Regex pattern {r:?} (supported: String patterns)"
        ))),
        _ => Err(fmt_err(format!("{what} pattern must be {{\"String\": ...}}, got {p}"))),
    }
}

fn parse_normalizer(v: &Value, out: &mut Vec<NormStep>) -> Result<()> {
    if v.is_null() {
        return Ok(());
    }
    let step = match type_of(v) {
        Some("Sequence") => {
            let list = v
                .get("normalizers")
                .and_then(Value::as_array)
                .ok_or_else(|| fmt_err("normalizer Sequence without a \"normalizers\" list"))?;
            for n in list {
                parse_normalizer(n, out)?;
            }
            return Ok(());
        }
        Some("BertNormalizer") => {
            let lowercase = bool_field(v, "lowercase", true)?;
            NormStep::Bert {
                clean_text: bool_field(v, "clean_text", true)?,
                handle_chinese_chars: bool_field(v, "handle_chinese_chars", true)?,
                strip_accents: bool_field(v, "strip_accents", lowercase)?,
                lowercase,
            }
        }
        Some("Lowercase") => NormStep::Lowercase,
        Some("NFD") => NormStep::Nfd,
        Some("NFC") => NormStep::Nfc,
        Some("NFKD") => NormStep::Nfkd,
        Some("NFKC") => NormStep::Nfkc,
        Some("StripAccents") => NormStep::StripAccents,
        Some("Strip") => NormStep::Strip {
            left: bool_field(v, "strip_left", true)?,
            right: bool_field(v, "strip_right", true)?,
        },
        Some("Prepend") => NormStep::Prepend(str_field(v, "prepend", "Prepend normalizer")?.to_string()),
        Some("Replace") => {
            let content = str_field(v, "content", "Replace normalizer")?.to_string();
            match v.get("pattern").and_then(|p| p.get("Regex")).and_then(Value::as_str) {
                Some(r) => NormStep::ReplaceRegex {
                    pattern: std::sync::Arc::new(
                        fancy_regex::Regex::new(r)
                            .map_err(|e| fmt_err(format!("Replace normalizer regex {r:?}: {e}")))?,
                    ),
                    content,
                },
                None => NormStep::Replace {
                    pattern: string_pattern(v, "Replace normalizer")?,
                    content,
                },
            }
        }
        Some("Precompiled") => {
            // Deserialized from text: the crate borrows the base64 string.
            let p: spm_precompiled::Precompiled = serde_json::from_str(&v.to_string())
                .map_err(|e| fmt_err(format!("Precompiled normalizer: cannot read its charsmap: {e}")))?;
            NormStep::Precompiled(std::sync::Arc::new(super::normalizer::Charsmap::new(p)))
        }
        Some(t) => {
            return Err(fmt_err(format!(
                "unsupported normalizer {t:?} (supported: BertNormalizer, Lowercase, NFD, NFC, NFKD, NFKC, \
                 StripAccents, Strip, Prepend, Replace, Precompiled, Sequence)"
            )))
        }
        None => return Err(fmt_err("normalizer has no \"type\"")),
    };
    out.push(step);
    Ok(())
}

fn prepend_scheme(v: &Value) -> Result<PrependScheme> {
    match v.get("prepend_scheme").and_then(Value::as_str) {
        Some("always") => Ok(PrependScheme::Always),
        Some("first") => Ok(PrependScheme::First),
        Some("never") => Ok(PrependScheme::Never),
        Some(s) => Err(fmt_err(format!("unknown Metaspace prepend_scheme {s:?}"))),
        // Files older than tokenizers 0.14 say `add_prefix_space`.
        None => Ok(if bool_field(v, "add_prefix_space", true)? {
            PrependScheme::Always
        } else {
            PrependScheme::Never
        }),
    }
}

fn parse_pre(v: &Value, out: &mut Vec<PreTokenizer>) -> Result<()> {
    if v.is_null() {
        return Ok(());
    }
    let step = match type_of(v) {
        Some("Sequence") => {
            let list = v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| fmt_err("pre_tokenizer Sequence without a \"pretokenizers\" list"))?;
            for p in list {
                parse_pre(p, out)?;
            }
            return Ok(());
        }
        Some("BertPreTokenizer") => PreTokenizer::Bert,
        Some("Whitespace") => PreTokenizer::Whitespace,
        Some("WhitespaceSplit") => PreTokenizer::WhitespaceSplit,
        Some("Metaspace") => PreTokenizer::Metaspace {
            replacement: one_char(str_field(v, "replacement", "Metaspace")?, "Metaspace replacement")?,
            prepend_scheme: prepend_scheme(v)?,
            split: bool_field(v, "split", true)?,
        },
        Some("Digits") => PreTokenizer::Digits {
            individual_digits: bool_field(v, "individual_digits", false)?,
        },
        Some("Punctuation") => match v.get("behavior").and_then(Value::as_str).unwrap_or("Isolated") {
            "Isolated" => PreTokenizer::Punctuation,
            b => {
                return Err(fmt_err(format!(
                    "unsupported Punctuation behavior {b:?} (supported: \"Isolated\")"
                )))
            }
        },
        Some("ByteLevel") => {
            return Err(fmt_err(
                "pre_tokenizer ByteLevel with a non-BPE model or mixed with other steps is not supported",
            ))
        }
        Some(t) => {
            return Err(fmt_err(format!(
                "unsupported pre_tokenizer {t:?} (supported: BertPreTokenizer, Whitespace, WhitespaceSplit, \
                 Metaspace, Digits, Punctuation, Sequence)"
            )))
        }
        None => return Err(fmt_err("pre_tokenizer has no \"type\"")),
    };
    out.push(step);
    Ok(())
}

fn parse_decoder(v: &Value, out: &mut Vec<Decoder>) -> Result<()> {
    let step = match type_of(v) {
        Some("Sequence") => {
            let list = v
                .get("decoders")
                .and_then(Value::as_array)
                .ok_or_else(|| fmt_err("decoder Sequence without a \"decoders\" list"))?;
            for d in list {
                parse_decoder(d, out)?;
            }
            return Ok(());
        }
        Some("WordPiece") => Decoder::WordPiece {
            prefix: v.get("prefix").and_then(Value::as_str).unwrap_or("##").to_string(),
            cleanup: bool_field(v, "cleanup", true)?,
        },
        Some("Metaspace") => Decoder::Metaspace {
            replacement: one_char(
                str_field(v, "replacement", "Metaspace decoder")?,
                "Metaspace replacement",
            )?,
            prepend_scheme: prepend_scheme(v)?,
        },
        Some("ByteFallback") => Decoder::ByteFallback,
        Some("Fuse") => Decoder::Fuse,
        Some("Strip") => Decoder::Strip {
            content: one_char(str_field(v, "content", "Strip decoder")?, "Strip content")?,
            start: v.get("start").and_then(Value::as_u64).unwrap_or(0) as usize,
            stop: v.get("stop").and_then(Value::as_u64).unwrap_or(0) as usize,
        },
        Some("Replace") => Decoder::Replace {
            pattern: string_pattern(v, "Replace decoder")?,
            content: str_field(v, "content", "Replace decoder")?.to_string(),
        },
        Some(t) => {
            return Err(fmt_err(format!(
                "unsupported decoder {t:?} (supported: WordPiece, Metaspace, ByteFallback, Fuse, Strip, \
                 Replace, Sequence)"
            )))
        }
        None => return Err(fmt_err("decoder has no \"type\"")),
    };
    out.push(step);
    Ok(())
}

fn token_id(v: &Value, what: &str) -> Result<u32> {
    v.as_u64()
        .filter(|&i| i < u32::MAX as u64)
        .map(|i| i as u32)
        .ok_or_else(|| fmt_err(format!("{what} must be a non-negative integer id, got {v}")))
}

fn parse_post(v: &Value) -> Result<Template> {
    match type_of(v) {
        None if v.is_null() => Ok(Template::default()),
        Some("BertProcessing") | Some("RobertaProcessing") => {
            let pair = |key: &str| -> Result<u32> {
                let p = v
                    .get(key)
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| fmt_err(format!("post_processor {key:?} must be [token, id]")))?;
                token_id(&p[1], key)
            };
            Ok(Template {
                before: vec![pair("cls")?],
                after: vec![pair("sep")?],
            })
        }
        Some("TemplateProcessing") => {
            let single = v
                .get("single")
                .and_then(Value::as_array)
                .ok_or_else(|| fmt_err("TemplateProcessing without a \"single\" template"))?;
            let specials = v.get("special_tokens").cloned().unwrap_or(Value::Null);
            let mut t = Template::default();
            let mut seen_sequence = false;
            for item in single {
                if item.get("Sequence").is_some() {
                    if seen_sequence {
                        return Err(fmt_err("TemplateProcessing single template has two sequences"));
                    }
                    seen_sequence = true;
                } else if let Some(s) = item.get("SpecialToken") {
                    let name = str_field(s, "id", "TemplateProcessing SpecialToken")?;
                    let ids = specials
                        .get(name)
                        .and_then(|e| e.get("ids"))
                        .and_then(Value::as_array)
                        .ok_or_else(|| fmt_err(format!("TemplateProcessing special token {name:?} has no ids")))?;
                    for id in ids {
                        let id = token_id(id, name)?;
                        if seen_sequence {
                            t.after.push(id)
                        } else {
                            t.before.push(id)
                        }
                    }
                } else {
                    return Err(fmt_err(format!("unknown TemplateProcessing item {item}")));
                }
            }
            if !seen_sequence {
                return Err(fmt_err("TemplateProcessing single template has no $A sequence"));
            }
            Ok(t)
        }
        Some(t) => Err(fmt_err(format!(
            "unsupported post_processor {t:?} (supported: BertProcessing, RobertaProcessing, TemplateProcessing)"
        ))),
        None => Err(fmt_err("post_processor has no \"type\"")),
    }
}

fn parse_added(v: &Value) -> Result<Vec<AddedToken>> {
    let Some(list) = v.as_array() else {
        return if v.is_null() {
            Ok(Vec::new())
        } else {
            Err(fmt_err("added_tokens must be a list"))
        };
    };
    list.iter()
        .map(|t| {
            let id = token_id(t.get("id").unwrap_or(&Value::Null), "added token id")?;
            let content = str_field(t, "content", "added token")?;
            let special = bool_field(t, "special", false)?;
            Ok(AddedToken {
                id,
                content: content.to_string(),
                special,
                single_word: bool_field(t, "single_word", false)?,
                lstrip: bool_field(t, "lstrip", false)?,
                rstrip: bool_field(t, "rstrip", false)?,
                normalized: bool_field(t, "normalized", !special)?,
            })
        })
        .collect()
}

/// A vocabulary as `token → id` and `id → token` (with holes).
type Vocab = (FxHashMap<String, u32>, Vec<Option<String>>);

/// `{token: id}` → (map, id → spelling table).
fn parse_vocab_map(v: &Value) -> Result<Vocab> {
    let obj = v
        .as_object()
        .ok_or_else(|| fmt_err("model.vocab must be an object mapping tokens to ids"))?;
    let mut map = FxHashMap::default();
    let mut table: Vec<Option<String>> = Vec::new();
    for (k, id) in obj {
        let id = token_id(id, &format!("vocabulary id of {k:?}"))?;
        if id as usize > 16 * obj.len() + (1 << 20) {
            return Err(fmt_err(format!(
                "token id {id} is far beyond the vocabulary: ids must be dense"
            )));
        }
        if table.len() <= id as usize {
            table.resize(id as usize + 1, None);
        }
        if let Some(prev) = &table[id as usize] {
            return Err(fmt_err(format!("tokens {prev:?} and {k:?} share id {id}")));
        }
        table[id as usize] = Some(k.clone());
        map.insert(k.clone(), id);
    }
    Ok((map, table))
}

fn parse_merges(list: &[Value]) -> Result<Vec<(String, String)>> {
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => match s.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
                _ => Err(fmt_err(format!(
                    "merge {i} ({s:?}) must be two tokens separated by one space"
                ))),
            },
            Value::Array(p) => match p.as_slice() {
                [Value::String(a), Value::String(b)] => Ok((a.clone(), b.clone())),
                _ => Err(fmt_err(format!("merge {i} must be a pair of strings, got {m}"))),
            },
            _ => Err(fmt_err(format!("merge {i} must be a string or a pair, got {m}"))),
        })
        .collect()
}

fn parse_model(model: &Value) -> Result<(Model, Vec<Option<String>>)> {
    match type_of(model) {
        Some("WordPiece") => {
            let (vocab, table) = parse_vocab_map(model.get("vocab").unwrap_or(&Value::Null))?;
            let unk = str_field(model, "unk_token", "WordPiece model")?;
            let unk_id = *vocab
                .get(unk)
                .ok_or_else(|| fmt_err(format!("WordPiece unk_token {unk:?} is not in the vocabulary")))?;
            Ok((
                Model::WordPiece(WordPiece {
                    vocab,
                    unk_id,
                    prefix: model
                        .get("continuing_subword_prefix")
                        .and_then(Value::as_str)
                        .unwrap_or("##")
                        .to_string(),
                    max_input_chars_per_word: model
                        .get("max_input_chars_per_word")
                        .and_then(Value::as_u64)
                        .unwrap_or(100) as usize,
                }),
                table,
            ))
        }
        Some("BPE") | None => {
            if let Some(d) = model.get("dropout").and_then(Value::as_f64) {
                if d > 0.0 {
                    return Err(fmt_err(format!(
                        "unsupported BPE dropout {d} (alignfw encodes deterministically; set dropout to null)"
                    )));
                }
            }
            for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
                if let Some(s) = model.get(key).and_then(Value::as_str) {
                    if !s.is_empty() {
                        return Err(fmt_err(format!("unsupported BPE {key} {s:?}")));
                    }
                }
            }
            let (vocab, table) = parse_vocab_map(model.get("vocab").unwrap_or(&Value::Null))?;
            let merges = match model.get("merges") {
                Some(Value::Array(list)) => parse_merges(list)?,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(fmt_err("model.merges must be a list")),
            };
            let mut map = MergeMap::default();
            for (rank, (a, b)) in merges.iter().enumerate() {
                let lookup = |t: &str| {
                    vocab.get(t).copied().ok_or_else(|| {
                        fmt_err(format!(
                            "merge {rank} ({a:?} {b:?}): token {t:?} is not in the vocabulary"
                        ))
                    })
                };
                map.insert(lookup(a)?, lookup(b)?, rank as u32, lookup(&format!("{a}{b}"))?);
            }
            let unk_id = match model.get("unk_token").and_then(Value::as_str) {
                // As Hugging Face: an unk_token missing from the vocabulary is an error when used;
                // refusing the file up front is clearer.
                Some(u) => Some(
                    *vocab
                        .get(u)
                        .ok_or_else(|| fmt_err(format!("unk_token {u:?} is not in the vocabulary")))?,
                ),
                None => None,
            };
            let mut byte_ids = [None; 256];
            for (b, slot) in byte_ids.iter_mut().enumerate() {
                *slot = vocab.get(&format!("<0x{b:02X}>")).copied();
            }
            let mut id_len: Vec<u32> = table
                .iter()
                .map(|s| s.as_ref().map_or(u32::MAX, |s| s.len() as u32))
                .collect();
            for id in byte_ids.iter().flatten() {
                id_len[*id as usize] = u32::MAX;
            }
            let ignore_merges = bool_field(model, "ignore_merges", false)?;
            let splits_at_metaspace = CharBpe::vocab_splits_at_metaspace(&vocab, ignore_merges);
            Ok((
                Model::Bpe(CharBpe {
                    splits_at_metaspace,
                    vocab,
                    merges: map,
                    unk_id,
                    fuse_unk: bool_field(model, "fuse_unk", false)?,
                    byte_fallback: bool_field(model, "byte_fallback", false)?,
                    ignore_merges,
                    byte_ids,
                    id_len,
                }),
                table,
            ))
        }
        Some("Unigram") => {
            let list = model
                .get("vocab")
                .and_then(Value::as_array)
                .ok_or_else(|| fmt_err("Unigram model.vocab must be a list of [piece, score]"))?;
            let pieces = list
                .iter()
                .enumerate()
                .map(|(i, p)| match p.as_array().map(Vec::as_slice) {
                    Some([Value::String(s), score]) => score
                        .as_f64()
                        .map(|f| (s.clone(), f))
                        .ok_or_else(|| fmt_err(format!("Unigram piece {i} has a non-numeric score"))),
                    _ => Err(fmt_err(format!("Unigram piece {i} must be [piece, score], got {p}"))),
                })
                .collect::<Result<Vec<_>>>()?;
            let table = pieces.iter().map(|(s, _)| Some(s.clone())).collect();
            let unk_id = match model.get("unk_id") {
                None | Some(Value::Null) => None,
                Some(v) => Some(token_id(v, "Unigram unk_id")?),
            };
            let byte_fallback = bool_field(model, "byte_fallback", false)?;
            Ok((Model::Unigram(Unigram::new(pieces, unk_id, byte_fallback)?), table))
        }
        Some(t) => Err(fmt_err(format!(
            "unsupported model type {t:?} (supported: BPE, WordPiece, Unigram)"
        ))),
    }
}

/// Whether `tokenizer.json` describes a byte-level BPE (read by [`crate::bpe::Tokenizer`]).
pub fn is_byte_level(root: &Value) -> bool {
    fn has_byte_level(v: &Value, list_key: &str) -> bool {
        match type_of(v) {
            Some("ByteLevel") => true,
            Some("Sequence") => v
                .get(list_key)
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(|x| has_byte_level(x, list_key))),
            _ => false,
        }
    }
    let model = root.get("model").unwrap_or(&Value::Null);
    matches!(type_of(model), Some("BPE") | None)
        && (has_byte_level(root.get("pre_tokenizer").unwrap_or(&Value::Null), "pretokenizers")
            || has_byte_level(root.get("decoder").unwrap_or(&Value::Null), "decoders"))
}

pub(super) fn from_json(text: &str) -> Result<Tokenizer> {
    let root: Value = serde_json::from_str(text).map_err(|e| fmt_err(format!("not valid JSON: {e}")))?;
    if !root.is_object() {
        return Err(fmt_err("tokenizer.json must be a JSON object"));
    }
    if is_byte_level(&root) {
        return Err(fmt_err(
            "a byte-level BPE tokenizer: read it with alignfw's byte-level BPE",
        ));
    }
    let model = root
        .get("model")
        .ok_or_else(|| fmt_err("tokenizer.json has no \"model\""))?;
    let (model, model_vocab) = parse_model(model)?;
    let mut norm = Vec::new();
    parse_normalizer(root.get("normalizer").unwrap_or(&Value::Null), &mut norm)?;
    let mut pre = Vec::new();
    parse_pre(root.get("pre_tokenizer").unwrap_or(&Value::Null), &mut pre)?;
    let decoder = match root.get("decoder") {
        None | Some(Value::Null) => None,
        Some(d) => {
            let mut steps = Vec::new();
            parse_decoder(d, &mut steps)?;
            Some(steps)
        }
    };
    Tokenizer::from_parts(
        Parts {
            normalizer: Normalizer(norm),
            pre_tokenizer: pre,
            model,
            model_vocab,
            added: parse_added(root.get("added_tokens").unwrap_or(&Value::Null))?,
            template: parse_post(root.get("post_processor").unwrap_or(&Value::Null))?,
            decoder,
        },
        text.to_string(),
    )
}

//! Hugging Face `tokenizer.json` and GPT-2 `vocab.json` + `merges.txt`, in and out.
//!
//! Supported: `model.type = "BPE"` without dropout, byte fallback or subword affixes; normalizer none
//! or NFC; pre-tokenizer `ByteLevel`, `Split(Regex | String, "Isolated")`, or a `Sequence` of them
//! containing a `ByteLevel`; decoder `ByteLevel`. Anything else is rejected with a
//! [`Error::TokenizerFormat`] that names the unsupported piece and what is supported.

use serde_json::{json, Map, Value};

use super::{AddedToken, Normalizer, Parts, Pattern, PreStep, Tokenizer};
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

fn parse_normalizer(v: &Value) -> Result<Normalizer> {
    match v {
        Value::Null => Ok(Normalizer::None),
        _ => match type_of(v) {
            Some("NFC") => Ok(Normalizer::Nfc),
            Some("Sequence") => {
                let list = v
                    .get("normalizers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| fmt_err("normalizer Sequence without a \"normalizers\" list"))?;
                match list.as_slice() {
                    [] => Ok(Normalizer::None),
                    [one] => parse_normalizer(one),
                    _ => Err(fmt_err(
                        "unsupported normalizer: a Sequence of several normalizers (supported: none, NFC)",
                    )),
                }
            }
            Some(t) => Err(fmt_err(format!(
                "unsupported normalizer type {t:?} (supported: none, NFC)"
            ))),
            None => Err(fmt_err("normalizer has no \"type\"")),
        },
    }
}

fn parse_pre_step(v: &Value, out: &mut Vec<PreStep>) -> Result<()> {
    match type_of(v) {
        Some("ByteLevel") => out.push(PreStep::ByteLevel {
            add_prefix_space: bool_field(v, "add_prefix_space", true)?,
            use_regex: bool_field(v, "use_regex", true)?,
            trim_offsets: bool_field(v, "trim_offsets", true)?,
        }),
        Some("Split") => {
            let pattern = v.get("pattern").ok_or_else(|| fmt_err("Split pre-tokenizer without \"pattern\""))?;
            let regex = match (pattern.get("Regex").and_then(Value::as_str), pattern.get("String").and_then(Value::as_str)) {
                (Some(r), _) => r.to_string(),
                (None, Some(s)) => fancy_regex::escape(s).into_owned(),
                _ => return Err(fmt_err(format!("Split pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}, got {pattern}"))),
            };
            let behavior = v.get("behavior").and_then(Value::as_str).unwrap_or("Isolated");
            if behavior != "Isolated" {
                return Err(fmt_err(format!("unsupported Split behavior {behavior:?} (supported: \"Isolated\")")));
            }
            if bool_field(v, "invert", false)? {
                return Err(fmt_err("unsupported Split with invert=true (supported: invert=false)"));
            }
            let p = Pattern::from_name_or_regex(&regex).map_err(|e| fmt_err(format!("Split pattern: {e}")))?;
            out.push(PreStep::Split(p));
        }
        Some("Sequence") => {
            let list = v.get("pretokenizers").and_then(Value::as_array).ok_or_else(|| fmt_err("pre_tokenizer Sequence without a \"pretokenizers\" list"))?;
            for step in list {
                parse_pre_step(step, out)?;
            }
        }
        Some(t) => {
            return Err(fmt_err(format!(
                "unsupported pre_tokenizer type {t:?}: alignfw reads byte-level BPE tokenizers (supported: ByteLevel, Split with behavior Isolated, Sequence of these)"
            )))
        }
        None => return Err(fmt_err("pre_tokenizer has no \"type\"")),
    }
    Ok(())
}

fn check_decoder(v: &Value) -> Result<()> {
    match type_of(v) {
        Some("ByteLevel") => Ok(()),
        Some("Sequence") => {
            let list = v.get("decoders").and_then(Value::as_array).cloned().unwrap_or_default();
            match list.as_slice() {
                [one] => check_decoder(one),
                _ => Err(fmt_err("unsupported decoder Sequence (supported: ByteLevel)")),
            }
        }
        Some(t) => Err(fmt_err(format!(
            "unsupported decoder type {t:?} (supported: ByteLevel)"
        ))),
        None if v.is_null() => Err(fmt_err(
            "tokenizer has no decoder; a byte-level BPE needs a ByteLevel decoder",
        )),
        None => Err(fmt_err("decoder has no \"type\"")),
    }
}

fn parse_merges(list: &[Value]) -> Result<Vec<(String, String)>> {
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => {
                let mut it = s.splitn(2, ' ');
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                        Ok((a.to_string(), b.to_string()))
                    }
                    _ => Err(fmt_err(format!(
                        "merge {i} ({s:?}) must be two tokens separated by one space"
                    ))),
                }
            }
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Ok((a.clone(), b.clone())),
                _ => Err(fmt_err(format!("merge {i} must be a pair of strings, got {m}"))),
            },
            _ => Err(fmt_err(format!(
                "merge {i} must be a string \"a b\" or a pair [a, b], got {m}"
            ))),
        })
        .collect()
}

fn parse_vocab(v: &Value) -> Result<Vec<(String, u32)>> {
    let obj = v
        .as_object()
        .ok_or_else(|| fmt_err("model.vocab must be an object mapping tokens to ids"))?;
    obj.iter()
        .map(|(k, id)| {
            id.as_u64()
                .filter(|&i| i < u32::MAX as u64)
                .map(|i| (k.clone(), i as u32))
                .ok_or_else(|| {
                    fmt_err(format!(
                        "vocabulary id of {k:?} must be a non-negative integer, got {id}"
                    ))
                })
        })
        .collect()
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
            let id = t
                .get("id")
                .and_then(Value::as_u64)
                .filter(|&i| i < u32::MAX as u64)
                .ok_or_else(|| fmt_err(format!("added token without a valid \"id\": {t}")))?;
            let content = t
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| fmt_err(format!("added token without \"content\": {t}")))?;
            let special = bool_field(t, "special", false)?;
            Ok(AddedToken {
                id: id as u32,
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

pub(super) fn from_json(json: &str) -> Result<Tokenizer> {
    let root: Value = serde_json::from_str(json).map_err(|e| fmt_err(format!("not valid JSON: {e}")))?;
    if !root.is_object() {
        return Err(fmt_err("tokenizer.json must be a JSON object"));
    }
    let model = root
        .get("model")
        .ok_or_else(|| fmt_err("tokenizer.json has no \"model\""))?;
    match type_of(model) {
        Some("BPE") | None => {}
        Some(t) => {
            return Err(fmt_err(format!(
                "unsupported model type {t:?}: alignfw reads byte-level BPE (model.type \"BPE\")"
            )))
        }
    }
    if let Some(d) = model.get("dropout").and_then(Value::as_f64) {
        if d > 0.0 {
            return Err(fmt_err(format!(
                "unsupported BPE dropout {d} (alignfw encodes deterministically; set dropout to null)"
            )));
        }
    }
    if bool_field(model, "byte_fallback", false)? {
        return Err(fmt_err(
            "unsupported BPE byte_fallback=true (a SentencePiece-style BPE, not byte-level)",
        ));
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let Some(s) = model.get(key).and_then(Value::as_str) {
            if !s.is_empty() {
                return Err(fmt_err(format!(
                    "unsupported BPE {key} {s:?} (byte-level BPE has none)"
                )));
            }
        }
    }
    let vocab = parse_vocab(model.get("vocab").ok_or_else(|| fmt_err("model has no \"vocab\""))?)?;
    let merges = match model.get("merges") {
        Some(Value::Array(list)) => parse_merges(list)?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(fmt_err("model.merges must be a list")),
    };
    let normalizer = parse_normalizer(root.get("normalizer").unwrap_or(&Value::Null))?;
    let mut steps = Vec::new();
    match root.get("pre_tokenizer") {
        None | Some(Value::Null) => {}
        Some(p) => parse_pre_step(p, &mut steps)?,
    }
    if !steps.iter().any(|s| matches!(s, PreStep::ByteLevel { .. })) {
        return Err(fmt_err(
            "pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer",
        ));
    }
    let decoder = root.get("decoder").cloned().unwrap_or(Value::Null);
    check_decoder(&decoder)?;
    Tokenizer::from_parts(Parts {
        vocab,
        merges,
        added: parse_added(root.get("added_tokens").unwrap_or(&Value::Null))?,
        steps,
        normalizer,
        ignore_merges: bool_field(model, "ignore_merges", false)?,
        unk_token: model.get("unk_token").and_then(Value::as_str).map(str::to_string),
        fuse_unk: bool_field(model, "fuse_unk", false)?,
        post_processor: root.get("post_processor").cloned().unwrap_or(Value::Null),
        decoder,
    })
}

/// The `ByteLevel` post-processor and decoder GPT-2's own `tokenizer.json` carries.
pub(super) fn byte_level_json() -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
}

/// The pre-tokenizer steps alignfw uses for a pattern: GPT-2's `ByteLevel` alone, or `Split` + `ByteLevel`.
pub(super) fn steps_for(pattern: Pattern) -> Vec<PreStep> {
    match pattern {
        Pattern::Gpt2 => vec![PreStep::ByteLevel {
            add_prefix_space: false,
            use_regex: true,
            trim_offsets: true,
        }],
        p => vec![
            PreStep::Split(p),
            PreStep::ByteLevel {
                add_prefix_space: false,
                use_regex: false,
                trim_offsets: true,
            },
        ],
    }
}

pub(super) fn from_vocab_merges(
    vocab_json: &str,
    merges_txt: &str,
    pattern: Pattern,
    special: &[String],
) -> Result<Tokenizer> {
    let v: Value =
        serde_json::from_str(vocab_json).map_err(|e| fmt_err(format!("vocab.json is not valid JSON: {e}")))?;
    let mut vocab = parse_vocab(&v)?;
    let mut merges = Vec::new();
    for (n, line) in merges_txt.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || (n == 0 && line.starts_with("#version")) {
            continue;
        }
        let mut it = line.split(' ');
        match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => merges.push((a.to_string(), b.to_string())),
            _ => {
                return Err(fmt_err(format!(
                    "merges.txt line {}: {line:?} must be two tokens separated by one space",
                    n + 1
                )))
            }
        }
    }
    let mut next_id = vocab.iter().map(|(_, i)| i + 1).max().unwrap_or(0);
    let mut added = Vec::new();
    for s in special {
        let id = match vocab.iter().find(|(t, _)| t == s) {
            Some((_, id)) => *id,
            None => {
                vocab.push((s.clone(), next_id));
                next_id += 1;
                next_id - 1
            }
        };
        added.push(AddedToken::special(id, s));
    }
    Tokenizer::from_parts(Parts {
        vocab,
        merges,
        added,
        steps: steps_for(pattern),
        normalizer: Normalizer::None,
        ignore_merges: false,
        unk_token: None,
        fuse_unk: false,
        post_processor: byte_level_json(),
        decoder: byte_level_json(),
    })
}

fn step_json(step: &PreStep) -> Value {
    match step {
        PreStep::ByteLevel {
            add_prefix_space,
            use_regex,
            trim_offsets,
        } => json!({
            "type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets, "use_regex": use_regex
        }),
        PreStep::Split(p) => {
            json!({"type": "Split", "pattern": {"Regex": p.as_str()}, "behavior": "Isolated", "invert": false})
        }
    }
}

pub(super) fn to_json(t: &Tokenizer) -> String {
    let p = &t.parts;
    let added: Vec<Value> = p
        .added
        .iter()
        .map(|a| {
            json!({"id": a.id, "content": a.content, "single_word": a.single_word, "lstrip": a.lstrip,
                   "rstrip": a.rstrip, "normalized": a.normalized, "special": a.special})
        })
        .collect();
    let pre = match p.steps.as_slice() {
        [one] => step_json(one),
        steps => json!({"type": "Sequence", "pretokenizers": steps.iter().map(step_json).collect::<Vec<_>>()}),
    };
    let normalizer = match p.normalizer {
        Normalizer::None => Value::Null,
        Normalizer::Nfc => json!({"type": "NFC"}),
    };
    let mut vocab: Vec<&(String, u32)> = p.vocab.iter().collect();
    vocab.sort_unstable_by_key(|(_, id)| *id);
    let vocab: Map<String, Value> = vocab.into_iter().map(|(k, id)| (k.clone(), json!(id))).collect();
    // Merges in rank order, one per pair (a pair listed twice keeps its last rank, as Hugging Face does).
    let mut ranked: Vec<((u32, u32), u32)> = t.merges.iter().map(|(pair, (rank, _))| (pair, rank)).collect();
    ranked.sort_unstable_by_key(|x| x.1);
    // "a b" strings load in every `tokenizers` version; pairs only where a token contains a space.
    let spell = |id: u32| t.id_to_token(id).unwrap_or_default();
    let as_pairs = ranked
        .iter()
        .any(|((a, b), _)| spell(*a).contains(' ') || spell(*b).contains(' '));
    let merges: Vec<Value> = ranked
        .iter()
        .map(|((a, b), _)| {
            if as_pairs {
                json!([spell(*a), spell(*b)])
            } else {
                json!(format!("{} {}", spell(*a), spell(*b)))
            }
        })
        .collect();
    let root = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre,
        "post_processor": p.post_processor,
        "decoder": p.decoder,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": p.unk_token,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": p.fuse_unk,
            "byte_fallback": false,
            "ignore_merges": p.ignore_merges,
            "vocab": vocab,
            "merges": merges,
        }
    });
    serde_json::to_string_pretty(&root).expect("a JSON value always serializes")
}

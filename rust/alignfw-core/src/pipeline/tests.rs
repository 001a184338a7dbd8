//! End-to-end tests of the subword pipeline (Hugging Face parity is tested from Python, against
//! `tokenizers` itself, in `tests/tokenizer/test_families.py`).

use super::*;

fn bert() -> Tokenizer {
    let json = r###"{
      "added_tokens": [
        {"id": 0, "content": "[PAD]", "special": true, "normalized": false},
        {"id": 1, "content": "[UNK]", "special": true, "normalized": false},
        {"id": 2, "content": "[CLS]", "special": true, "normalized": false},
        {"id": 3, "content": "[SEP]", "special": true, "normalized": false}
      ],
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                     "strip_accents": null, "lowercase": true},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
      "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100,
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "cafe": 4, "un": 5, "##aff": 6,
                          "##able": 7, "!": 8, "中": 9}}
    }"###;
    Tokenizer::from_json(json).unwrap()
}

#[test]
fn wordpiece_ids_offsets_and_template() {
    let t = bert();
    assert_eq!(t.family(), "WordPiece");
    let text = "Café UNAFFABLE!中";
    let e = t.encode(text, &AllowedSpecial::All, true).unwrap();
    assert_eq!(e.ids, vec![2, 4, 5, 6, 7, 8, 9, 3]);
    assert_eq!(t.encode_ids(text, &AllowedSpecial::All, true).unwrap(), e.ids);
    // 'Café' is bytes 0..5 (é is two bytes); the template tokens have empty offsets.
    assert_eq!(
        e.offsets,
        vec![(0, 0), (0, 5), (6, 8), (8, 11), (11, 15), (15, 16), (16, 19), (0, 0)]
    );
    assert_eq!(
        char_offsets(text, &e.offsets),
        vec![(0, 0), (0, 4), (5, 7), (7, 10), (10, 14), (14, 15), (15, 16), (0, 0)]
    );
    assert_eq!(t.decode(&e.ids, true).unwrap(), "cafe unaffable! 中");
    assert_eq!(t.decode(&e.ids, false).unwrap(), "[CLS] cafe unaffable! 中 [SEP]");
    assert_eq!(
        t.encode("xyz [SEP]", &AllowedSpecial::All, false).unwrap().ids,
        vec![1, 3]
    );
    // Disallowed, "[SEP]" is text: "[", "sep", "]" are each unknown.
    assert_eq!(
        t.encode("xyz [SEP]", &AllowedSpecial::None, false).unwrap().ids,
        vec![1, 1, 1, 1]
    );
}

#[test]
fn unsupported_components_are_named() {
    let json = r#"{"normalizer": {"type": "Precompiled", "precompiled_charsmap": "AAAA"},
                   "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]}}"#;
    let e = Tokenizer::from_json(json).unwrap_err();
    assert!(
        matches!(&e, Error::TokenizerFormat(m) if m.contains("Precompiled")),
        "{e:?}"
    );
    let json = r#"{"model": {"type": "WordLevel", "vocab": {}, "unk_token": "x"}}"#;
    let e = Tokenizer::from_json(json).unwrap_err();
    assert!(
        matches!(&e, Error::TokenizerFormat(m) if m.contains("WordLevel")),
        "{e:?}"
    );
}

#[test]
fn sentencepiece_bpe_byte_fallback_and_decoder() {
    let json = r#"{
      "added_tokens": [{"id": 0, "content": "<unk>", "special": true, "normalized": false},
                       {"id": 1, "content": "<s>", "special": true, "normalized": false}],
      "normalizer": {"type": "Sequence", "normalizers": [
          {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
      "pre_tokenizer": null,
      "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
          {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
          "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
      "decoder": {"type": "Sequence", "decoders": [
          {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
          {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
      "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
                "vocab": {"<unk>": 0, "<s>": 1, "<0xC3>": 2, "<0xA9>": 3, "▁": 4, "a": 5, "b": 6, "▁a": 7, "▁ab": 8},
                "merges": ["▁ a", "▁a b"]}
    }"#;
    let t = Tokenizer::from_json(json).unwrap();
    let text = "ab é";
    let e = t.encode(text, &AllowedSpecial::All, true).unwrap();
    assert_eq!(e.ids, vec![1, 8, 4, 2, 3]);
    assert_eq!(t.encode_ids(text, &AllowedSpecial::All, true).unwrap(), e.ids);
    assert_eq!(e.offsets, vec![(0, 0), (0, 2), (2, 3), (3, 5), (3, 5)]);
    assert_eq!(t.decode(&e.ids, true).unwrap(), "ab é");
    // An unknown character without byte tokens is one fused <unk>.
    assert_eq!(
        t.encode("ab xy", &AllowedSpecial::All, false).unwrap().ids,
        vec![8, 4, 0]
    );
}

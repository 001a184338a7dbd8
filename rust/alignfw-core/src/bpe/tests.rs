//! End-to-end tests of the tokenizer (the pieces have their own tests next to them).

use super::*;

fn corpus() -> String {
    let mut s = String::new();
    for i in 0..300 {
        s.push_str(&format!(
            "The quick brown fox {i} jumps over the lazy dog's back.\n    fn main() {{ let x_{i} = {}; }}\n你好，世界！ 😀 naïve café\n\n",
            i * 7
        ));
    }
    s
}

fn trained(pattern: Pattern) -> Tokenizer {
    let config = TrainerConfig {
        vocab_size: 600,
        min_frequency: 2,
        special_tokens: vec!["<|endoftext|>".into(), "<|pad|>".into()],
        pattern,
    };
    Tokenizer::train_from_texts(&[corpus()], &config).unwrap()
}

#[test]
fn training_fills_the_vocabulary_in_hf_order() {
    let t = trained(Pattern::Gpt2);
    // The corpus runs out of pairs seen twice before 600.
    assert!(t.vocab_size() > 400 && t.vocab_size() <= 600, "{}", t.vocab_size());
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(t.token_to_id("<|pad|>"), Some(1));
    // The alphabet follows, sorted by code point of the spelling: '!' (0x21) first.
    assert_eq!(t.id_to_token(2), Some("!"));
    assert_eq!(t.id_to_bytes(2), Some(&b"!"[..]));
    assert!(t.token_to_id("Ġthe").is_some() || t.token_to_id("ĠThe").is_some());
}

#[test]
fn round_trip_and_compression() {
    for p in [Pattern::Gpt2, Pattern::Llama3, Pattern::Qwen2] {
        let t = trained(p);
        let text = corpus();
        let ids = t.encode(&text, &AllowedSpecial::None).unwrap();
        assert!(
            ids.len() * 3 < text.len(),
            "trained merges must compress their own corpus"
        );
        assert_eq!(t.decode(&ids, false).unwrap(), text);
        for s in ["", " ", "\u{0}", "a\r\n\r\n  b", "ǅ𝔘\u{10FFFF}\u{FEFF}", "'S 'll 12345"] {
            assert_eq!(
                t.decode(&t.encode(s, &AllowedSpecial::None).unwrap(), false).unwrap(),
                s
            );
        }
    }
}

#[test]
fn special_tokens_need_permission() {
    let t = trained(Pattern::Llama3);
    let text = "a<|endoftext|>b";
    let plain = t.encode(text, &AllowedSpecial::None).unwrap();
    assert!(!plain.contains(&0));
    assert_eq!(t.decode(&plain, false).unwrap(), text);
    let allowed = t.encode(text, &AllowedSpecial::All).unwrap();
    assert_eq!(allowed.iter().filter(|&&i| i == 0).count(), 1);
    let some = t.encode(text, &AllowedSpecial::Some(vec!["<|pad|>".into()])).unwrap();
    assert_eq!(some, plain);
    let only = t
        .encode(text, &AllowedSpecial::Some(vec!["<|endoftext|>".into()]))
        .unwrap();
    assert_eq!(only, allowed);
    assert!(matches!(
        t.encode(text, &AllowedSpecial::Some(vec!["<x>".into()])),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(t.decode(&allowed, true).unwrap(), "ab");
}

#[test]
fn encode_into_appends_what_encode_returns() {
    let t = trained(Pattern::Llama3);
    let (a, b) = ("a<|endoftext|>b naïve", "你好 <|endoftext|> world");
    let mut out = vec![7];
    t.encode_into(a, &AllowedSpecial::All, &[], &mut out).unwrap();
    t.encode_into(b, &AllowedSpecial::All, &[(3, 16)], &mut out).unwrap();
    let mut expected = vec![7];
    expected.extend(t.encode(a, &AllowedSpecial::All).unwrap());
    expected.extend(t.encode_literal(b, &AllowedSpecial::All, &[(3, 16)]).unwrap());
    assert_eq!(out, expected);
    assert_eq!(out.iter().filter(|&&i| i == 0).count(), 1); // the literal span kept its text
    assert!(t.encode_into(b, &AllowedSpecial::All, &[(3, 99)], &mut out).is_err());
}

#[test]
fn json_round_trip_keeps_ids() {
    for p in [
        Pattern::Gpt2,
        Pattern::Qwen2,
        Pattern::from_name_or_regex(r"\p{L}+|\s+|\d").unwrap(),
    ] {
        let t = trained(p);
        let again = Tokenizer::from_json(&t.to_json()).unwrap();
        let text = corpus();
        assert_eq!(
            again.encode(&text, &AllowedSpecial::All).unwrap(),
            t.encode(&text, &AllowedSpecial::All).unwrap()
        );
        assert_eq!(again.to_json(), t.to_json());
    }
}

#[test]
fn batch_equals_single() {
    let t = trained(Pattern::Gpt2);
    let texts: Vec<String> = corpus().lines().map(str::to_string).collect();
    let single: Vec<Vec<u32>> = texts
        .iter()
        .map(|x| t.encode(x, &AllowedSpecial::None).unwrap())
        .collect();
    for threads in [None, Some(1), Some(2), Some(3)] {
        assert_eq!(t.encode_batch(&texts, &AllowedSpecial::None, threads).unwrap(), single);
    }
    assert!(t.encode_batch(&texts, &AllowedSpecial::None, Some(0)).is_err());
}

#[test]
fn bad_ids_and_files_are_errors() {
    let t = trained(Pattern::Gpt2);
    let err = t.decode(&[5, 600], false).unwrap_err();
    assert!(matches!(&err, Error::Tokenize(m) if m.contains("600")), "{err:?}");
    for (json, needle) in [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        (r#"{"model": {"type": "WordPiece", "vocab": {}}}"#, "WordPiece"),
        (
            r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Metaspace"}}"#,
            "Metaspace",
        ),
        (
            r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}}"#,
            "not in the vocabulary",
        ),
        (
            r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "Lowercase"}}"#,
            "Lowercase",
        ),
        (
            r#"{"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}"#,
            "non-negative",
        ),
        (
            r#"{"model": {"type": "BPE", "vocab": {"a": 4000000000}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}}"#,
            "dense",
        ),
    ] {
        match Tokenizer::from_json(json) {
            Err(Error::TokenizerFormat(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{json}: {other:?}"),
        }
    }
}

#[test]
fn long_input_without_whitespace_is_not_quadratic() {
    let t = trained(Pattern::Gpt2);
    // 4 MB of letters is one pre-tokenized piece: the heap merge keeps it O(n log n).
    let text = "abcdefghij".repeat(400_000);
    let start = std::time::Instant::now();
    let ids = t.encode(&text, &AllowedSpecial::None).unwrap();
    assert_eq!(t.decode(&ids, false).unwrap(), text);
    assert!(start.elapsed().as_secs_f64() < 20.0, "took {:?}", start.elapsed());
}

#[test]
fn vocab_merges_files_load() {
    let t = trained(Pattern::Gpt2);
    let vocab: serde_json::Map<String, serde_json::Value> = t
        .parts()
        .vocab
        .iter()
        .filter(|(s, _)| !s.starts_with("<|"))
        .map(|(s, i)| (s.clone(), (*i).into()))
        .collect();
    let merges: String = std::iter::once("#version: 0.2".to_string())
        .chain(t.parts().merges.iter().map(|(a, b)| format!("{a} {b}")))
        .collect::<Vec<_>>()
        .join("\n");
    let u = Tokenizer::from_vocab_merges(
        &serde_json::to_string(&vocab).unwrap(),
        &merges,
        Pattern::Gpt2,
        &["<|endoftext|>".into()],
    )
    .unwrap();
    let text = corpus();
    assert_eq!(
        u.encode(&text, &AllowedSpecial::None).unwrap(),
        t.encode(&text, &AllowedSpecial::None).unwrap()
    );
    assert_eq!(u.token_to_id("<|endoftext|>"), Some(t.vocab_size() as u32));
    assert!(matches!(
        Tokenizer::from_vocab_merges("{}", "a b c", Pattern::Gpt2, &[]),
        Err(Error::TokenizerFormat(_))
    ));
}

#[test]
fn short_keys_are_the_zero_padded_bytes_and_length() {
    let bytes: Vec<u8> = (1..=16u8).map(|i| i * 13).collect();
    for n in 0..=15 {
        let mut buf = [0u8; 16];
        buf[..n].copy_from_slice(&bytes[..n]);
        buf[15] = n as u8;
        assert_eq!(short_key(&bytes[..n]), Some(u128::from_le_bytes(buf)), "length {n}");
    }
    assert_eq!(short_key(&bytes), None);
    // The scanner's form, from one load where 16 bytes follow the start: the same keys.
    let text: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) | 1).collect();
    for start in 0..text.len() {
        for end in start + 1..=text.len().min(start + 20) {
            assert_eq!(
                short_key_at(&text, start, end),
                short_key(&text[start..end]),
                "{start}..{end}"
            );
        }
    }
}

#[test]
fn letter_runs_longer_than_a_word_split_as_the_regex() {
    // Long ASCII words, words ending in non-ASCII letters and digits after letters, around the
    // 8-byte steps of the letter scanner.
    let text =
        "abcdefghijklmnopqrstuvwxyzABCDEFGH abcdefgé abcdefghé1 ǅabcdefghijk\u{2160}abcdefgh'sabcdefg_x abcdefgh";
    for pattern in [Pattern::Gpt2, Pattern::Llama3] {
        let re = fancy_regex::Regex::new(pattern.as_str()).unwrap();
        let mut want = Vec::new();
        crate::bpe::pretokenize::split_regex(&re, text, &mut |p| want.push(p.to_string())).unwrap();
        let mut got = Vec::new();
        pattern.split(text, &mut |p| got.push(p.to_string())).unwrap();
        assert_eq!(got, want);
    }
}

#[test]
fn cached_pieces_equal_merged_ones_as_the_table_grows_and_clears() {
    // More distinct pieces than the cache holds (MAX_CACHE_ENTRIES), short (1-15 bytes, the table)
    // and long (16-128, their map; over 128, never cached), each text encoded twice (the second time
    // from the cache): every piece's ids must be those of merging it afresh.
    let t = trained(Pattern::Gpt2);
    let word = |mut i: usize, len: usize| -> String {
        let mut w = String::from(" ");
        for _ in 0..len {
            w.push(char::from(b'a' + (i % 26) as u8));
            i /= 26;
        }
        w
    };
    let n = MAX_CACHE_ENTRIES + MAX_CACHE_ENTRIES / 2;
    let text: String = (0..n).map(|i| word(i * 7919, 2 + i % 13)).collect::<String>()
        + &(0..200).map(|i| word(i * 31, 15 + i % 130)).collect::<String>();
    let pieces = t.pre_tokenize(&text).unwrap();
    assert!(pieces.iter().filter(|p| p.len() <= 15).count() > MAX_CACHE_ENTRIES);
    let mut expected = Vec::new();
    let (mut ids, mut scratch) = (Vec::new(), Vec::new());
    for p in &pieces {
        t.merge_piece(p.as_bytes(), &mut ids, &mut scratch);
        expected.extend_from_slice(&ids);
    }
    for _ in 0..2 {
        assert_eq!(t.encode(&text, &AllowedSpecial::None).unwrap(), expected);
    }
    // The same pieces one by one, through `encode_piece`'s path (no scanner prefetch).
    for _ in 0..2 {
        let mut one_by_one = Vec::new();
        with_cache(t.uid, |cache| {
            for p in &pieces {
                t.encode_piece(p.as_bytes(), cache, &mut one_by_one);
            }
        });
        assert_eq!(one_by_one, expected);
    }
}

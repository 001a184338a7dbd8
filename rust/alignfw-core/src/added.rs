//! Added tokens (Hugging Face's `AddedVocabulary`): tokens matched in the raw text before the model
//! runs, shared by every tokenizer family.
//!
//! Matching follows Hugging Face `tokenizers` (`tokenizer/added_vocabulary.rs`) step for step:
//! 1. tokens with `normalized = false` are found in the raw text;
//! 2. in each stretch of text between them, after normalization, tokens with `normalized = true`
//!    are found (their patterns are their contents normalized by the same normalizer).
//!
//! Each pass is one leftmost-longest Aho-Corasick scan. A `single_word` match with a word character
//! (`\w`) next to it is dropped (its text stays plain text); `lstrip` / `rstrip` widen a kept match over
//! the whitespace on that side, but `lstrip` never reaches back into the previous match (its start
//! becomes the previous match's end: two adjacent stripping tokens both survive).
//!
//! A caller may name *literal* spans of the raw text ([`Splitter::with_literal`]): a raw-text match
//! overlapping one is dropped, so that text stays plain text and is encoded together with the text
//! around it, exactly as if the spelling were not an added token at that position (a chat user who
//! typed `<|im_start|>`). The scan is not restarted inside a dropped match.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::error::{Error, Result};

/// A token added on top of the model vocabulary (Hugging Face's `AddedToken`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    /// Special tokens (`<|endoftext|>`) are matched only when the caller allows them.
    pub special: bool,
    pub single_word: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub normalized: bool,
}

impl AddedToken {
    /// A special token with Hugging Face's defaults for special tokens.
    pub fn special(id: u32, content: &str) -> Self {
        AddedToken {
            id,
            content: content.to_string(),
            special: true,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
        }
    }
}

/// Which special tokens an encode call may produce from their spelling in the text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedSpecial {
    /// None: special-token spellings are encoded as plain text (the safe default).
    #[default]
    None,
    /// Every special token.
    All,
    /// Only these.
    Some(Vec<String>),
}

/// One piece of a split: plain text (a byte range of the scanned string) or an added token's id
/// (with the range it covers, stripped whitespace included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(Range<usize>),
    Token(u32, Range<usize>),
}

#[derive(Debug, Clone, Copy)]
struct Flags {
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
}

/// One Aho-Corasick automaton over a set of added tokens.
#[derive(Debug, Clone)]
pub struct Matcher {
    ac: AhoCorasick,
    ids: Vec<u32>,
    flags: Vec<Flags>,
    /// No token has a flag: every match is kept as found.
    plain: bool,
    /// Sorted, non-overlapping byte ranges no match may overlap (see [`Splitter::with_literal`]).
    literal: Vec<Range<usize>>,
}

impl Matcher {
    /// `patterns[i]` is what token `tokens[i]` is matched as.
    fn new(tokens: &[&AddedToken], patterns: &[String]) -> Result<Option<Self>> {
        if tokens.is_empty() {
            return Ok(None);
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            .map_err(|e| Error::TokenizerFormat(format!("cannot index added tokens: {e}")))?;
        let flags: Vec<Flags> = tokens
            .iter()
            .map(|t| Flags {
                single_word: t.single_word,
                lstrip: t.lstrip,
                rstrip: t.rstrip,
            })
            .collect();
        Ok(Some(Matcher {
            ac,
            ids: tokens.iter().map(|t| t.id).collect(),
            plain: flags.iter().all(|f| !(f.single_word || f.lstrip || f.rstrip)),
            flags,
            literal: Vec::new(),
        }))
    }

    /// Splits `text` into plain-text pieces and added tokens, in order; calls `f` on each. Empty text
    /// pieces are not reported.
    pub fn split(&self, text: &str, f: &mut dyn FnMut(Piece)) {
        let mut last = 0;
        let mut lit = 0; // literal spans ending at or before the current match are behind us
        for m in self.ac.find_iter(text) {
            let k = m.pattern().as_usize();
            let (mut start, mut end) = (m.start(), m.end());
            if !self.literal.is_empty() {
                while lit < self.literal.len() && self.literal[lit].end <= start {
                    lit += 1;
                }
                if self.literal.get(lit).is_some_and(|r| r.start < end) {
                    continue;
                }
            }
            if !self.plain {
                let fl = self.flags[k];
                if fl.single_word {
                    let before = text[..start].chars().next_back().is_some_and(is_word_char);
                    let after = text[end..].chars().next().is_some_and(is_word_char);
                    if before || after {
                        continue;
                    }
                }
                if fl.lstrip {
                    start = text[..start].trim_end_matches(char::is_whitespace).len().max(last);
                }
                if fl.rstrip {
                    end = text.len() - text[end..].trim_start_matches(char::is_whitespace).len();
                }
            }
            if last < start {
                f(Piece::Text(last..start));
            }
            f(Piece::Token(self.ids[k], start..end));
            last = end;
        }
        if last < text.len() {
            f(Piece::Text(last..text.len()));
        }
    }
}

/// `\w` as the `regex` crate defines it (Unicode word characters), which Hugging Face uses here.
fn is_word_char(c: char) -> bool {
    regex_syntax::try_is_word_character(c).unwrap_or(c.is_alphanumeric() || c == '_')
}

/// The two passes of matching for one choice of allowed special tokens.
#[derive(Debug, Clone, Default)]
pub struct Splitter {
    /// Tokens with `normalized = false`, matched in the raw text.
    pub raw: Option<Matcher>,
    /// Tokens with `normalized = true`, matched in normalized text.
    pub normalized: Option<Matcher>,
}

impl Splitter {
    /// A splitter over the tokens `keep` selects. `normalize` maps a token's content to the pattern
    /// it is matched as in normalized text.
    pub fn new(
        tokens: &[AddedToken],
        keep: impl Fn(&AddedToken) -> bool,
        normalize: &dyn Fn(&str) -> String,
    ) -> Result<Self> {
        let raw: Vec<&AddedToken> = tokens.iter().filter(|t| keep(t) && !t.normalized).collect();
        let norm: Vec<&AddedToken> = tokens.iter().filter(|t| keep(t) && t.normalized).collect();
        let raw_patterns: Vec<String> = raw.iter().map(|t| t.content.clone()).collect();
        let mut norm_patterns: Vec<String> = norm.iter().map(|t| normalize(&t.content)).collect();
        // A token whose content normalizes to nothing cannot be matched; keep the automaton valid.
        for (p, t) in norm_patterns.iter_mut().zip(&norm) {
            if p.is_empty() {
                p.clone_from(&t.content);
            }
        }
        Ok(Splitter {
            raw: Matcher::new(&raw, &raw_patterns)?,
            normalized: Matcher::new(&norm, &norm_patterns)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_none() && self.normalized.is_none()
    }

    /// This splitter, except that no match in the raw text overlaps one of the byte ranges
    /// `literal` (sorted, non-overlapping; see [`literal_byte_spans`]): the text of a dropped match
    /// is plain text, encoded with the text around it. Tokens matched after normalization
    /// (`normalized = true`) are not affected: special tokens of chat models are all matched in the
    /// raw text.
    pub fn with_literal(&self, literal: Vec<Range<usize>>) -> Splitter {
        let raw = self.raw.as_ref().map(|m| Matcher {
            literal: literal.clone(),
            ..m.clone()
        });
        Splitter {
            raw,
            normalized: self.normalized.clone(),
        }
    }
}

/// Character spans `(start, end)` of `text` as sorted byte ranges, empty spans dropped. Spans may
/// come in any order and may overlap (they are merged).
///
/// Raises `InvalidInput` for a span with `start > end` or `end` past the text's length in characters.
pub fn literal_byte_spans(text: &str, spans: &[(usize, usize)]) -> Result<Vec<Range<usize>>> {
    let n_chars = text.chars().count();
    let mut sorted: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for &(a, b) in spans {
        if a > b || b > n_chars {
            return Err(Error::InvalidInput(format!(
                "literal span ({a}, {b}) is not a character range of the text (length {n_chars}); give (start, end) \
                 with 0 <= start <= end <= len(text)"
            )));
        }
        if a < b {
            sorted.push((a, b));
        }
    }
    sorted.sort_unstable();
    // Character index -> byte index, walking the text once.
    let mut bytes: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    bytes.push(text.len());
    let mut out: Vec<Range<usize>> = Vec::with_capacity(sorted.len());
    for (a, b) in sorted {
        let (a, b) = (bytes[a], bytes[b]);
        match out.last_mut() {
            Some(r) if a <= r.end => r.end = r.end.max(b),
            _ => out.push(a..b),
        }
    }
    Ok(out)
}

/// Splitters for "no special token" and "every special token", built once; a splitter for an
/// explicit list is built per call.
#[derive(Debug, Clone)]
pub struct AddedVocab {
    tokens: Vec<AddedToken>,
    all: Splitter,
    plain: Splitter,
}

impl AddedVocab {
    pub fn new(tokens: Vec<AddedToken>, normalize: &dyn Fn(&str) -> String) -> Result<Self> {
        for t in &tokens {
            if t.content.is_empty() {
                return Err(Error::TokenizerFormat(format!(
                    "added token {} has empty content",
                    t.id
                )));
            }
        }
        Ok(AddedVocab {
            all: Splitter::new(&tokens, |_| true, normalize)?,
            plain: Splitter::new(&tokens, |t| !t.special, normalize)?,
            tokens,
        })
    }

    pub fn tokens(&self) -> &[AddedToken] {
        &self.tokens
    }

    /// The splitter for `allowed`: borrowed for `None` / `All`, built for an explicit list (whose
    /// names must all be special tokens).
    pub fn splitter(
        &self,
        allowed: &AllowedSpecial,
        normalize: &dyn Fn(&str) -> String,
    ) -> Result<std::borrow::Cow<'_, Splitter>> {
        use std::borrow::Cow;
        match allowed {
            AllowedSpecial::None => Ok(Cow::Borrowed(&self.plain)),
            AllowedSpecial::All => Ok(Cow::Borrowed(&self.all)),
            AllowedSpecial::Some(names) => {
                for n in names {
                    if !self.tokens.iter().any(|t| t.special && &t.content == n) {
                        let specials: Vec<&str> = self
                            .tokens
                            .iter()
                            .filter(|t| t.special)
                            .map(|t| t.content.as_str())
                            .collect();
                        return Err(Error::InvalidInput(format!(
                            "{n:?} is not a special token of this tokenizer (special tokens: {specials:?})"
                        )));
                    }
                }
                Ok(Cow::Owned(Splitter::new(
                    &self.tokens,
                    |t| !t.special || names.contains(&t.content),
                    normalize,
                )?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(id: u32, content: &str, lstrip: bool, rstrip: bool, single_word: bool) -> AddedToken {
        AddedToken {
            id,
            content: content.into(),
            special: true,
            single_word,
            lstrip,
            rstrip,
            normalized: false,
        }
    }

    fn split(tokens: &[AddedToken], text: &str) -> Vec<Piece> {
        let s = Splitter::new(tokens, |_| true, &|c| c.to_string()).unwrap();
        let mut out = Vec::new();
        s.raw.as_ref().unwrap().split(text, &mut |p| out.push(p));
        out
    }

    #[test]
    fn adjacent_stripping_tokens_both_survive() {
        // Issue 14: '<S> <S>' lost its second token when both strip the space between them.
        let t = [tok(7, "<S>", true, true, false)];
        assert_eq!(split(&t, "<S> <S>"), vec![Piece::Token(7, 0..4), Piece::Token(7, 4..7)]);
        assert_eq!(
            split(&t, "a  <S>  <S> b"),
            vec![
                Piece::Text(0..1),
                Piece::Token(7, 1..8),
                Piece::Token(7, 8..12),
                Piece::Text(12..13)
            ]
        );
    }

    #[test]
    fn single_word_uses_unicode_word_characters() {
        let t = [tok(1, "<m>", false, false, true)];
        // A combining mark is a word character for `\w` (not for char::is_alphanumeric).
        assert_eq!(split(&t, "e\u{301}<m>"), vec![Piece::Text(0..6)]);
        assert_eq!(split(&t, "x <m>"), vec![Piece::Text(0..2), Piece::Token(1, 2..5)]);
        assert_eq!(split(&t, "_<m>"), vec![Piece::Text(0..4)]);
    }

    #[test]
    fn literal_spans_drop_overlapping_matches_only() {
        let t = [tok(7, "<S>", false, false, false), tok(8, "<T>", true, true, false)];
        let s = Splitter::new(&t, |_| true, &|c| c.to_string()).unwrap();
        let run = |text: &str, spans: &[(usize, usize)]| {
            let lit = s.with_literal(literal_byte_spans(text, spans).unwrap());
            let mut out = Vec::new();
            lit.raw.as_ref().unwrap().split(text, &mut |p| out.push(p));
            out
        };
        assert_eq!(
            run("a<S>b<S>", &[(1, 4)]),
            vec![Piece::Text(0..5), Piece::Token(7, 5..8)]
        );
        // Any overlap drops the match; a stripping token next to a literal span still strips.
        assert_eq!(
            run("<S> <T>", &[(2, 3)]),
            vec![Piece::Text(0..3), Piece::Token(8, 3..7)]
        );
        // Character spans become byte ranges ('é' is two bytes).
        assert_eq!(run("é<S>", &[(1, 4)]), vec![Piece::Text(0..5)]);
        assert_eq!(run("é<S>", &[]), vec![Piece::Text(0..2), Piece::Token(7, 2..5)]);
        assert!(matches!(
            literal_byte_spans("ab", &[(1, 3)]),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            literal_byte_spans("ab", &[(2, 1)]),
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(
            literal_byte_spans("abcd", &[(2, 4), (0, 1), (1, 3), (3, 3)]).unwrap(),
            vec![0..4]
        );
    }

    #[test]
    fn explicit_allowed_list_must_name_special_tokens() {
        let v = AddedVocab::new(vec![tok(1, "<a>", false, false, false)], &|c| c.to_string()).unwrap();
        assert!(v
            .splitter(&AllowedSpecial::Some(vec!["<a>".into()]), &|c| c.to_string())
            .is_ok());
        assert!(matches!(
            v.splitter(&AllowedSpecial::Some(vec!["<b>".into()]), &|c| c.to_string()),
            Err(Error::InvalidInput(_))
        ));
    }
}

//! Normalizers (Hugging Face's `normalizers`): BERT's, Unicode forms, lowercase, accents, strip,
//! prepend, replace and SentencePiece's precompiled charsmaps, each tracking where bytes came from.

use std::sync::Arc;

use unicode_categories::UnicodeCategories;

use super::normalized::Normalized;

/// One step of the normalizer (a `Sequence` is flattened into a list of these).
#[derive(Debug, Clone)]
pub enum NormStep {
    /// BERT's: drop control characters and map whitespace to ' ', space out CJK ideographs, strip
    /// accents (NFD, then drop non-spacing marks), lowercase.
    Bert {
        clean_text: bool,
        handle_chinese_chars: bool,
        strip_accents: bool,
        lowercase: bool,
    },
    Lowercase,
    Nfd,
    Nfc,
    Nfkd,
    Nfkc,
    /// Drops combining marks (no decomposition of its own).
    StripAccents,
    Strip {
        left: bool,
        right: bool,
    },
    Prepend(String),
    /// Replaces a literal string.
    Replace {
        pattern: String,
        content: String,
    },
    /// Replaces the matches of a regex (T5-style files collapse runs of spaces with `" {2,}"`).
    ReplaceRegex {
        pattern: Arc<fancy_regex::Regex>,
        content: String,
    },
    /// SentencePiece's compiled normalization rules (T5, ALBERT, XLNet, DeBERTa-v3 files): each
    /// grapheme (under 6 bytes) or else each character is looked up in the charsmap.
    Precompiled(Arc<Charsmap>),
}

/// A SentencePiece charsmap, with its answers for the 128 ASCII characters looked up once (most
/// graphemes of most text are one ASCII character; the charsmap lookup allocates).
#[derive(Debug)]
pub struct Charsmap {
    map: spm_precompiled::Precompiled,
    ascii: Vec<Option<String>>,
    /// Every ASCII character maps to itself.
    ascii_identity: bool,
}

impl Charsmap {
    pub fn new(map: spm_precompiled::Precompiled) -> Self {
        let ascii: Vec<Option<String>> = (0u8..128)
            .map(|b| map.transform((b as char).encode_utf8(&mut [0; 4])).map(str::to_string))
            .collect();
        Charsmap {
            ascii_identity: ascii.iter().all(Option::is_none),
            ascii,
            map,
        }
    }

    #[inline]
    fn transform<'a>(&'a self, part: &str) -> Option<&'a str> {
        match part.as_bytes() {
            [b] if b.is_ascii() => self.ascii[*b as usize].as_deref(),
            _ => self.map.transform(part),
        }
    }
}

impl PartialEq for NormStep {
    fn eq(&self, other: &Self) -> bool {
        use NormStep::*;
        match (self, other) {
            (Precompiled(a), Precompiled(b)) => Arc::ptr_eq(a, b),
            (Precompiled(_), _) | (_, Precompiled(_)) => false,
            (ReplaceRegex { pattern: a, content: b }, ReplaceRegex { pattern: c, content: d }) => {
                a.as_str() == c.as_str() && b == d
            }
            (
                Bert {
                    clean_text: a,
                    handle_chinese_chars: b,
                    strip_accents: c,
                    lowercase: d,
                },
                Bert {
                    clean_text: e,
                    handle_chinese_chars: f,
                    strip_accents: g,
                    lowercase: h,
                },
            ) => (a, b, c, d) == (e, f, g, h),
            (Strip { left: a, right: b }, Strip { left: c, right: d }) => (a, b) == (c, d),
            (Prepend(a), Prepend(b)) => a == b,
            (Replace { pattern: a, content: b }, Replace { pattern: c, content: d }) => (a, b) == (c, d),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// Hugging Face's bookkeeping for one charsmap replacement: the new characters replace the old ones,
/// extra ones are insertions, missing ones removals folded into the last change.
fn precompiled_replace(dest: &mut Vec<(char, isize)>, old: &str, new: &str) {
    let diff = new.chars().count() as isize - old.chars().count() as isize;
    dest.extend(new.chars().map(|c| (c, 0)));
    if diff > 0 {
        dest.iter_mut().rev().take(diff as usize).for_each(|(_, ch)| *ch = 1);
    } else if diff < 0 {
        if let Some((_, ch)) = dest.last_mut() {
            *ch += diff;
        }
    }
}

fn apply_precompiled(p: &Charsmap, n: &mut Normalized) {
    use unicode_segmentation::UnicodeSegmentation;
    // ASCII text without "\r\n" (the one multi-character ASCII grapheme) is one-character graphemes.
    if p.ascii_identity && n.text.is_ascii() && !n.text.contains("\r\n") {
        return;
    }
    let mut dest = Vec::with_capacity(n.text.len());
    let mut modified = false;
    for grapheme in n.text.graphemes(true) {
        if grapheme.len() < 6 {
            if let Some(norm) = p.transform(grapheme) {
                modified = true;
                precompiled_replace(&mut dest, grapheme, norm);
                continue;
            }
        }
        for (i, c) in grapheme.char_indices() {
            let part = &grapheme[i..i + c.len_utf8()];
            match p.transform(part) {
                Some(norm) => {
                    modified = true;
                    precompiled_replace(&mut dest, part, norm);
                }
                None => dest.push((c, 0)),
            }
        }
    }
    if modified {
        n.transform(dest, 0);
    }
}

/// The normalizer: its steps in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Normalizer(pub Vec<NormStep>);

fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_bert_control(c: char) -> bool {
    // ASCII's only "other" characters are the C0 controls and DEL (the tables' answer, without the search).
    if c.is_ascii() {
        return c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r');
    }
    c.is_other()
}

fn is_nonspacing_mark(c: char) -> bool {
    !c.is_ascii() && c.is_mark_nonspacing()
}

fn is_chinese_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B920..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

impl Normalizer {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn apply(&self, n: &mut Normalized) {
        for step in &self.0 {
            match step {
                NormStep::Bert {
                    clean_text,
                    handle_chinese_chars,
                    strip_accents,
                    lowercase,
                } => {
                    if *clean_text {
                        n.filter(|c| !(c == '\0' || c == '\u{fffd}' || is_bert_control(c)));
                        n.map(|c| if is_bert_whitespace(c) { ' ' } else { c });
                    }
                    if *handle_chinese_chars && n.text.chars().any(is_chinese_char) {
                        let mut dest = Vec::with_capacity(n.text.len() + 16);
                        for c in n.text.chars() {
                            if is_chinese_char(c) {
                                dest.extend([(' ', 0), (c, 1), (' ', 1)]);
                            } else {
                                dest.push((c, 0));
                            }
                        }
                        n.transform(dest, 0);
                    }
                    if *strip_accents {
                        n.nfd();
                        n.filter(|c| !is_nonspacing_mark(c));
                    }
                    if *lowercase {
                        n.lowercase();
                    }
                }
                NormStep::Lowercase => n.lowercase(),
                NormStep::Nfd => n.nfd(),
                NormStep::Nfc => n.nfc(),
                NormStep::Nfkd => n.nfkd(),
                NormStep::Nfkc => n.nfkc(),
                NormStep::StripAccents => {
                    n.filter(|c| !unicode_normalization_alignments::char::is_combining_mark(c));
                }
                NormStep::Strip { left, right } => n.strip(*left, *right),
                NormStep::Prepend(s) => {
                    if !n.is_empty() {
                        n.prepend(s)
                    }
                }
                NormStep::Replace { pattern, content } => n.replace(pattern, content),
                NormStep::Precompiled(p) => apply_precompiled(p, n),
                NormStep::ReplaceRegex { pattern, content } => n.replace_regex(pattern, content),
            }
        }
    }

    /// A string normalized on its own (an added token's content, for matching in normalized text).
    pub fn normalize_str(&self, s: &str) -> String {
        let mut n = Normalized::new(s, 0);
        self.apply(&mut n);
        n.text
    }
}

//! Pre-tokenizers (Hugging Face's `pre_tokenizers`): BERT's, `Whitespace`, `WhitespaceSplit`,
//! `Metaspace`, `Digits`, `Punctuation`; words as byte ranges of one string where the steps only split.

use unicode_categories::UnicodeCategories;

use super::normalized::Normalized;

/// Where Metaspace prepends its replacement character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrependScheme {
    Always,
    /// Only to the word that starts the text.
    First,
    Never,
}

/// One step of the pre-tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub enum PreTokenizer {
    /// Split on whitespace (dropped), then on punctuation (kept as one-character words).
    Bert,
    /// `\w+|[^\w\s]+`.
    Whitespace,
    /// Split on whitespace (dropped).
    WhitespaceSplit,
    /// Spaces become `replacement`, which is prepended as the scheme says; with `split`, each
    /// `replacement` starts a new word.
    Metaspace {
        replacement: char,
        prepend_scheme: PrependScheme,
        split: bool,
    },
    /// Split off digits: each on its own (`individual_digits`) or in runs.
    Digits { individual_digits: bool },
    /// Punctuation (Bert's definition) isolated.
    Punctuation,
}

fn is_bert_punc(c: char) -> bool {
    // Unicode punctuation in ASCII is a subset of `is_ascii_punctuation`.
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    c.is_punctuation()
}

fn is_word_char(c: char) -> bool {
    regex_syntax::try_is_word_character(c).unwrap_or(c.is_alphanumeric() || c == '_')
}

/// Splits `n` where `is_delim` holds; delimiters are dropped (`keep == false`) or kept alone.
fn split_chars(n: &Normalized, is_delim: impl Fn(char) -> bool, keep: bool, out: &mut Vec<Normalized>) {
    let mut start = 0;
    for (i, c) in n.text.char_indices() {
        if is_delim(c) {
            if start < i {
                out.push(n.slice(start, i));
            }
            if keep {
                out.push(n.slice(i, i + c.len_utf8()));
            }
            start = i + c.len_utf8();
        }
    }
    if start < n.text.len() {
        out.push(n.slice(start, n.text.len()));
    }
}

/// Splits `n` into maximal runs of characters of the same class (`class(c) == None`: dropped).
fn split_runs(n: &Normalized, class: impl Fn(char) -> Option<u8>, out: &mut Vec<Normalized>) {
    let mut run: Option<(usize, u8)> = None;
    for (i, c) in n.text.char_indices() {
        let k = class(c);
        match (run, k) {
            (Some((_, a)), Some(b)) if a == b => {}
            _ => {
                if let Some((s, _)) = run {
                    out.push(n.slice(s, i));
                }
                run = k.map(|b| (i, b));
            }
        }
    }
    if let Some((s, _)) = run {
        out.push(n.slice(s, n.text.len()));
    }
}

/// Like [`split_chars`], on `range` of `text`, into byte ranges.
fn split_chars_ranges(
    text: &str,
    range: (usize, usize),
    is_delim: impl Fn(char) -> bool,
    keep: bool,
    out: &mut Vec<(usize, usize)>,
) {
    let (base, end) = range;
    let mut start = base;
    for (i, c) in text[base..end].char_indices() {
        if is_delim(c) {
            let i = base + i;
            if start < i {
                out.push((start, i));
            }
            if keep {
                out.push((i, i + c.len_utf8()));
            }
            start = i + c.len_utf8();
        }
    }
    if start < end {
        out.push((start, end));
    }
}

/// Like [`split_runs`], on `range` of `text`, into byte ranges.
fn split_runs_ranges(
    text: &str,
    range: (usize, usize),
    class: impl Fn(char) -> Option<u8>,
    out: &mut Vec<(usize, usize)>,
) {
    let (base, end) = range;
    let mut run: Option<(usize, u8)> = None;
    for (i, c) in text[base..end].char_indices() {
        let i = base + i;
        let k = class(c);
        match (run, k) {
            (Some((_, a)), Some(b)) if a == b => {}
            _ => {
                if let Some((s, _)) = run {
                    out.push((s, i));
                }
                run = k.map(|b| (i, b));
            }
        }
    }
    if let Some((s, _)) = run {
        out.push((s, end));
    }
}

fn whitespace_class(c: char) -> Option<u8> {
    if is_word_char(c) {
        Some(0)
    } else if c.is_whitespace() {
        None
    } else {
        Some(1)
    }
}

/// Metaspace's edit of one piece: spaces become `replacement`, which is prepended as `scheme` says.
pub(super) fn metaspace_edit(n: &mut Normalized, replacement: char, scheme: PrependScheme) {
    let mut rep = [0u8; 4];
    let rep: &str = replacement.encode_utf8(&mut rep);
    n.replace(" ", rep);
    let prepend = match scheme {
        PrependScheme::Always => true,
        PrependScheme::First => n.origin == 0,
        PrependScheme::Never => false,
    };
    if prepend && !n.text.starts_with(replacement) {
        n.prepend(rep);
    }
}

/// Metaspace's split: each `replacement` starts a new word (Hugging Face's `MergedWithNext`).
pub(super) fn metaspace_split(text: &str, replacement: char, out: &mut Vec<(usize, usize)>) {
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == replacement && i > start {
            out.push((start, i));
            start = i;
        }
    }
    if start < text.len() {
        out.push((start, text.len()));
    }
}

impl PreTokenizer {
    /// Splits each range of `text` (steps that only split, without editing the text).
    pub(super) fn split_ranges(&self, text: &str, ranges: &[(usize, usize)], out: &mut Vec<(usize, usize)>) {
        for &r in ranges {
            match self {
                PreTokenizer::Bert => {
                    let mut words = Vec::new();
                    split_chars_ranges(text, r, char::is_whitespace, false, &mut words);
                    for &w in &words {
                        split_chars_ranges(text, w, is_bert_punc, true, out);
                    }
                }
                PreTokenizer::Punctuation => split_chars_ranges(text, r, is_bert_punc, true, out),
                PreTokenizer::WhitespaceSplit => split_chars_ranges(text, r, char::is_whitespace, false, out),
                PreTokenizer::Whitespace => split_runs_ranges(text, r, whitespace_class, out),
                PreTokenizer::Digits {
                    individual_digits: true,
                } => split_chars_ranges(text, r, char::is_numeric, true, out),
                PreTokenizer::Digits {
                    individual_digits: false,
                } => split_runs_ranges(text, r, |c| Some(u8::from(c.is_numeric())), out),
                PreTokenizer::Metaspace { .. } => unreachable!("Metaspace edits the text"),
            }
        }
    }

    pub(super) fn apply(&self, pieces: Vec<Normalized>) -> Vec<Normalized> {
        let mut out = Vec::with_capacity(pieces.len() * 2);
        for n in pieces {
            match self {
                PreTokenizer::Bert => {
                    let mut words = Vec::new();
                    split_chars(&n, char::is_whitespace, false, &mut words);
                    for w in &words {
                        split_chars(w, is_bert_punc, true, &mut out);
                    }
                }
                PreTokenizer::Punctuation => split_chars(&n, is_bert_punc, true, &mut out),
                PreTokenizer::WhitespaceSplit => split_chars(&n, char::is_whitespace, false, &mut out),
                PreTokenizer::Whitespace => split_runs(&n, whitespace_class, &mut out),
                PreTokenizer::Digits { individual_digits } => {
                    if *individual_digits {
                        split_chars(&n, char::is_numeric, true, &mut out)
                    } else {
                        split_runs(&n, |c| Some(u8::from(c.is_numeric())), &mut out)
                    }
                }
                PreTokenizer::Metaspace {
                    replacement,
                    prepend_scheme,
                    split,
                } => {
                    let mut n = n;
                    metaspace_edit(&mut n, *replacement, *prepend_scheme);
                    if *split {
                        let mut ranges = Vec::new();
                        metaspace_split(&n.text, *replacement, &mut ranges);
                        out.extend(ranges.into_iter().map(|(a, b)| n.slice(a, b)));
                    } else if !n.is_empty() {
                        out.push(n);
                    }
                }
            }
        }
        out
    }
}

//! Pre-tokenization: splitting text into the pieces BPE merges within.
//!
//! The three regexes of the byte-level BPE family get hand-written scanners that reproduce the
//! backtracking regex's leftmost-first semantics exactly (checked against fancy-regex in the tests
//! below and against Hugging Face `tokenizers` in `tests/tokenizer/`); they are what make encoding
//! several times faster than tiktoken, whose time is mostly spent in fancy-regex. Any other regex runs
//! on fancy-regex with Hugging Face's `Split(behavior="Isolated")` semantics.

use fancy_regex::Regex;

use super::unicode::{class, LETTER, NUMBER, OTHER, SPACE};
use crate::error::{Error, Result};

/// GPT-2's pre-tokenizer regex (also Hugging Face's `ByteLevel(use_regex=True)`).
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's (tiktoken `cl100k_base`-like, digits in groups of up to three).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (Llama 3's with single digits).
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A pre-tokenizer regex: one of the known ones (scanned by hand) or any other (fancy-regex).
#[derive(Debug, Clone)]
pub enum Pattern {
    Gpt2,
    Llama3,
    Qwen2,
    Custom(Box<Regex>),
}

impl Pattern {
    /// `"gpt2"`, `"llama3"`, `"qwen2"`, or a regex (the known regexes map to their scanners).
    pub fn from_name_or_regex(s: &str) -> Result<Self> {
        match s {
            "gpt2" | GPT2_PATTERN => Ok(Pattern::Gpt2),
            "llama3" | LLAMA3_PATTERN => Ok(Pattern::Llama3),
            "qwen2" | QWEN2_PATTERN => Ok(Pattern::Qwen2),
            _ => Regex::new(s)
                .map(|r| Pattern::Custom(Box::new(r)))
                .map_err(|e| Error::InvalidInput(format!("invalid pre-tokenizer regex {s:?}: {e}"))),
        }
    }

    /// The regex source.
    pub fn as_str(&self) -> &str {
        match self {
            Pattern::Gpt2 => GPT2_PATTERN,
            Pattern::Llama3 => LLAMA3_PATTERN,
            Pattern::Qwen2 => QWEN2_PATTERN,
            Pattern::Custom(r) => r.as_str(),
        }
    }

    /// Calls `f` on each piece of `text`, in order; the pieces concatenate to `text`.
    #[inline]
    pub fn split<'a>(&self, text: &'a str, f: &mut impl FnMut(&'a str)) -> Result<()> {
        match self {
            Pattern::Gpt2 => split_gpt2(text, f),
            Pattern::Llama3 => split_llama3(text, 3, f),
            Pattern::Qwen2 => split_llama3(text, 1, f),
            Pattern::Custom(re) => return split_regex(re, text, f),
        }
        Ok(())
    }
}

/// Hugging Face `Split(pattern, behavior="Isolated")`: matches and the gaps between them are pieces.
pub fn split_regex<'a>(re: &Regex, text: &'a str, f: &mut impl FnMut(&'a str)) -> Result<()> {
    let mut last = 0;
    for m in re.find_iter(text) {
        let m = m.map_err(|e| Error::Tokenize(format!("pre-tokenizer regex failed: {e}")))?;
        if m.start() > last {
            f(&text[last..m.start()]);
        }
        if m.end() > m.start() {
            f(m.as_str());
        }
        last = m.end();
    }
    if last < text.len() {
        f(&text[last..]);
    }
    Ok(())
}

/// The character starting at byte `i` of `s` and its class; `s` must have a char boundary at `i`.
#[inline(always)]
fn char_at(s: &[u8], i: usize) -> (char, u8, usize) {
    let b = s[i];
    if b < 0x80 {
        let c = b as char;
        return (c, class(c), 1);
    }
    // `s` comes from a `&str` and `i` is a char boundary, so this is well-formed UTF-8 (no unsafe needed).
    let (cp, len) = if b < 0xE0 {
        (((b as u32 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
    } else if b < 0xF0 {
        (
            ((b as u32 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F),
            3,
        )
    } else {
        (
            ((b as u32 & 0x07) << 18)
                | ((s[i + 1] as u32 & 0x3F) << 12)
                | ((s[i + 2] as u32 & 0x3F) << 6)
                | (s[i + 3] as u32 & 0x3F),
            4,
        )
    };
    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
    (c, class(c), len)
}

/// Class at `i`, or `None` at the end.
#[inline(always)]
fn class_at(s: &[u8], i: usize) -> Option<(char, u8, usize)> {
    (i < s.len()).then(|| char_at(s, i))
}

/// End of the run of characters whose class satisfies `keep`, starting at `i`.
#[inline(always)]
fn run(s: &[u8], mut i: usize, keep: impl Fn(char, u8) -> bool) -> usize {
    while i < s.len() {
        // ASCII fast path.
        let b = s[i];
        let (c, cl, len) = if b < 0x80 {
            (b as char, class(b as char), 1)
        } else {
            char_at(s, i)
        };
        if !keep(c, cl) {
            break;
        }
        i += len;
    }
    i
}

/// Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) starting at `i` (which holds
/// an apostrophe), or 0. `fold`: match case-insensitively as `(?i:...)` does, where `ſ` (U+017F) folds to `s`.
#[inline]
fn contraction(s: &[u8], i: usize, fold: bool) -> usize {
    let lower = |j: usize| -> Option<(u8, usize)> {
        let b = *s.get(j)?;
        if b < 0x80 {
            Some((if fold { b.to_ascii_lowercase() } else { b }, 1))
        } else if fold && b == 0xC5 && s.get(j + 1) == Some(&0xBF) {
            Some((b's', 2))
        } else {
            None
        }
    };
    let Some((c1, l1)) = lower(i + 1) else { return 0 };
    match c1 {
        b's' | b't' | b'm' | b'd' => 1 + l1,
        b'r' | b'v' | b'l' => match lower(i + 1 + l1) {
            Some((b'e', l2)) if c1 != b'l' => 1 + l1 + l2,
            Some((b'l', l2)) if c1 == b'l' => 1 + l1 + l2,
            _ => 0,
        },
        _ => 0,
    }
}

/// `\s+(?!\S)|\s+` at `i` (a whitespace character): the whole run if it ends the text, else the run
/// minus its last character (left for the next piece's optional leading space), else the single character.
#[inline(always)]
fn whitespace_tail(s: &[u8], i: usize) -> usize {
    let mut j = i;
    let mut last_start = i;
    while j < s.len() {
        let (_, cl, len) = char_at(s, j);
        if cl & SPACE == 0 {
            break;
        }
        last_start = j;
        j += len;
    }
    if j == s.len() || last_start == i {
        j
    } else {
        last_start
    }
}

fn split_gpt2<'a>(text: &'a str, f: &mut impl FnMut(&'a str)) {
    let s = text.as_bytes();
    let mut i = 0;
    while i < s.len() {
        let (c, cl, _) = char_at(s, i);
        // 's|'t|'re|'ve|'m|'ll|'d
        if c == '\'' {
            let n = contraction(s, i, false);
            if n > 0 {
                f(&text[i..i + n]);
                i += n;
                continue;
            }
        }
        // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
        let (start, run_class) = if c == ' ' {
            match class_at(s, i + 1) {
                Some((_, cl2, _)) if cl2 & SPACE == 0 => (i + 1, cl2),
                _ => (i, cl),
            }
        } else {
            (i, cl)
        };
        let end = if run_class & LETTER != 0 {
            run(s, start, |_, k| k & LETTER != 0)
        } else if run_class & NUMBER != 0 {
            run(s, start, |_, k| k & NUMBER != 0)
        } else if run_class == OTHER {
            run(s, start, |_, k| k == OTHER)
        } else {
            whitespace_tail(s, i)
        };
        f(&text[i..end]);
        i = end;
    }
}

/// Llama 3 (`max_digits` = 3) and Qwen2 (`max_digits` = 1).
fn split_llama3<'a>(text: &'a str, max_digits: usize, f: &mut impl FnMut(&'a str)) {
    let s = text.as_bytes();
    let mut i = 0;
    while i < s.len() {
        let (c, cl, len) = char_at(s, i);
        let end = 'piece: {
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if c == '\'' {
                let n = contraction(s, i, true);
                if n > 0 {
                    break 'piece i + n;
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if cl & LETTER != 0 {
                break 'piece run(s, i + len, |_, k| k & LETTER != 0);
            }
            if cl & NUMBER == 0 && c != '\r' && c != '\n' {
                if let Some((_, cl2, len2)) = class_at(s, i + len) {
                    if cl2 & LETTER != 0 {
                        break 'piece run(s, i + len + len2, |_, k| k & LETTER != 0);
                    }
                }
            }
            // \p{N}{1,max_digits}
            if cl & NUMBER != 0 {
                let mut j = i + len;
                for _ in 1..max_digits {
                    match class_at(s, j) {
                        Some((_, k, l)) if k & NUMBER != 0 => j += l,
                        _ => break,
                    }
                }
                break 'piece j;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let start = if c == ' ' {
                match class_at(s, i + 1) {
                    Some((_, OTHER, _)) => Some(i + 1),
                    _ => None,
                }
            } else if cl == OTHER {
                Some(i)
            } else {
                None
            };
            if let Some(start) = start {
                let j = run(s, start, |_, k| k == OTHER);
                break 'piece run(s, j, |ch, _| ch == '\r' || ch == '\n');
            }
            // `\s*[\r\n]+`: the whitespace run up to and including its last newline.
            let mut j = i;
            let mut after_newline = None;
            while j < s.len() {
                let (ch, k, l) = char_at(s, j);
                if k & SPACE == 0 {
                    break;
                }
                j += l;
                if ch == '\r' || ch == '\n' {
                    after_newline = Some(j);
                }
            }
            if let Some(e) = after_newline {
                break 'piece e;
            }
            // \s+(?!\S)|\s+
            whitespace_tail(s, i)
        };
        f(&text[i..end]);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(p: &Pattern, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        p.split(text, &mut |x| out.push(x.to_string())).unwrap();
        out
    }

    fn oracle(re: &Regex, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        split_regex(re, text, &mut |x| out.push(x.to_string())).unwrap();
        out
    }

    /// A deterministic xorshift generator, so the randomized tests need no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random strings drawn from characters that exercise every branch of the three regexes.
    fn random_text(rng: &mut Rng, len: usize) -> String {
        const ALPHABET: &[&str] = &[
            "a",
            "Z",
            "é",
            "中",
            "ß",
            "\u{2160}",
            "\u{0345}",
            "1",
            "٣",
            "½",
            "'",
            "s",
            "S",
            "t",
            "re",
            "VE",
            "m",
            "LL",
            "d",
            "ſ",
            " ",
            " ",
            " ",
            "\t",
            "\n",
            "\r",
            "\u{3000}",
            "\u{a0}",
            "\u{85}",
            "!",
            ".",
            "(",
            "😀",
            "\u{200d}",
            "\u{10FFFF}",
            "-",
            "_",
            "\u{0301}",
        ];
        (0..len)
            .map(|_| ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize])
            .collect()
    }

    #[test]
    fn scanners_equal_the_regexes_on_random_text() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for (p, src) in [
            (Pattern::Gpt2, GPT2_PATTERN),
            (Pattern::Llama3, LLAMA3_PATTERN),
            (Pattern::Qwen2, QWEN2_PATTERN),
        ] {
            let re = Regex::new(src).unwrap();
            for round in 0..3000 {
                let text = random_text(&mut rng, 1 + round % 40);
                assert_eq!(pieces(&p, &text), oracle(&re, &text), "{src} on {text:?}");
            }
        }
    }

    #[test]
    fn scanners_equal_the_regexes_on_every_code_point_in_context() {
        // Each code point between contexts that trigger the optional-prefix and lookahead branches.
        let (gpt2, llama3) = (Regex::new(GPT2_PATTERN).unwrap(), Regex::new(LLAMA3_PATTERN).unwrap());
        let mut text = String::new();
        for cp in (0..0x110000u32).step_by(13) {
            if let Some(c) = char::from_u32(cp) {
                for ctx in ["a", " ", "1", "'", "!"] {
                    text.push_str(ctx);
                    text.push(c);
                }
                text.push_str("  x\n");
            }
            if text.len() > 1 << 16 {
                for (p, re) in [(Pattern::Gpt2, &gpt2), (Pattern::Llama3, &llama3)] {
                    assert_eq!(pieces(&p, &text), oracle(re, &text));
                }
                text.clear();
            }
        }
    }

    #[test]
    fn known_splits() {
        let p = Pattern::Gpt2;
        assert_eq!(
            pieces(&p, "Hello world's  end\n"),
            ["Hello", " world", "'s", " ", " end", "\n"]
        );
        assert_eq!(pieces(&p, "x   \ty"), ["x", "   ", "\t", "y"]);
        let l = Pattern::Llama3;
        assert_eq!(
            pieces(&l, "I'VE 12345 (x)\n\n  y"),
            ["I", "'VE", " ", "123", "45", " (", "x", ")\n\n", " ", " y"]
        );
        assert_eq!(pieces(&Pattern::Qwen2, "123"), ["1", "2", "3"]);
        assert!(pieces(&l, "").is_empty());
    }

    #[test]
    fn names_resolve_to_scanners() {
        assert!(matches!(Pattern::from_name_or_regex("gpt2").unwrap(), Pattern::Gpt2));
        assert!(matches!(
            Pattern::from_name_or_regex(LLAMA3_PATTERN).unwrap(),
            Pattern::Llama3
        ));
        assert!(matches!(
            Pattern::from_name_or_regex(r"\w+").unwrap(),
            Pattern::Custom(_)
        ));
        assert!(matches!(
            Pattern::from_name_or_regex("(").unwrap_err(),
            Error::InvalidInput(_)
        ));
    }
}

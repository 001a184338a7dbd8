//! Pre-tokenization: splitting text into the pieces BPE merges within.
//!
//! The three regexes of the byte-level BPE family get hand-written scanners that reproduce the
//! backtracking regex's leftmost-first semantics exactly (checked against fancy-regex in the tests
//! below and against Hugging Face `tokenizers` in `tests/tokenizer/`); they are what make encoding
//! several times faster than tiktoken, whose time is mostly spent in fancy-regex. Any other regex runs
//! on fancy-regex with Hugging Face's `Split(behavior="Isolated")` semantics.

use fancy_regex::Regex;

use super::unicode::{class_of, BYTE_CLASS, LETTER, MULTI, NUMBER, OTHER, SPACE};
use crate::error::{Error, Result};

/// GPT-2's pre-tokenizer regex (also Hugging Face's `ByteLevel(use_regex=True)`).
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's (tiktoken `cl100k_base`-like, digits in groups of up to three).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (Llama 3's with single digits).
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a scanner calls with each piece's byte range `(start, end)`. Closures implement it; the
/// encoder implements it on a type of its own whose method is `#[inline(always)]`, so that its
/// per-piece work is compiled into the scanner's loop (a closure that large stays a call).
pub trait OnPiece {
    fn on_piece(&mut self, start: usize, end: usize);
}

impl<F: FnMut(usize, usize)> OnPiece for F {
    #[inline(always)]
    fn on_piece(&mut self, start: usize, end: usize) {
        self(start, end)
    }
}

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
        self.split_ranges(text, &mut |a, b| f(&text[a..b]))
    }

    /// Calls `f(start, end)` with the byte range of each piece of `text`, in order (the encoder's
    /// form: it merges byte slices, so no piece needs a `&str` and its char-boundary checks).
    #[inline]
    pub fn split_ranges(&self, text: &str, f: &mut impl OnPiece) -> Result<()> {
        match self {
            Pattern::Gpt2 => split_gpt2(text.as_bytes(), f),
            Pattern::Llama3 => split_llama3(text.as_bytes(), 3, f),
            Pattern::Qwen2 => split_llama3(text.as_bytes(), 1, f),
            Pattern::Custom(re) => return split_regex_ranges(re, text, f),
        }
        Ok(())
    }
}

/// Hugging Face `Split(pattern, behavior="Isolated")`: matches and the gaps between them are pieces.
pub fn split_regex<'a>(re: &Regex, text: &'a str, f: &mut impl FnMut(&'a str)) -> Result<()> {
    split_regex_ranges(re, text, &mut |a, b| f(&text[a..b]))
}

/// [`split_regex`] as byte ranges.
fn split_regex_ranges(re: &Regex, text: &str, f: &mut impl OnPiece) -> Result<()> {
    let mut last = 0;
    for m in re.find_iter(text) {
        let m = m.map_err(|e| Error::Tokenize(format!("pre-tokenizer regex failed: {e}")))?;
        if m.start() > last {
            f.on_piece(last, m.start());
        }
        if m.end() > m.start() {
            f.on_piece(m.start(), m.end());
        }
        last = m.end();
    }
    if last < text.len() {
        f.on_piece(last, text.len());
    }
    Ok(())
}

/// The class and byte length of the character starting at byte `i` of `s` (a char boundary of
/// well-formed UTF-8). ASCII costs one table load.
#[inline(always)]
fn class_len_at(s: &[u8], i: usize) -> (u8, usize) {
    let b = s[i];
    let k = BYTE_CLASS[b as usize];
    if k != MULTI {
        return (k, 1);
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
    (class_of(cp), len)
}

/// End of the run of characters whose class satisfies `keep`, starting at `i`. ASCII bytes take one
/// table load each; a multi-byte character is decoded.
#[inline(always)]
fn run(s: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while i < s.len() {
        let k = BYTE_CLASS[s[i] as usize];
        if k != MULTI {
            if !keep(k) {
                break;
            }
            i += 1;
        } else {
            let (k, len) = class_len_at(s, i);
            if !keep(k) {
                break;
            }
            i += len;
        }
    }
    i
}

/// `run(s, i, |k| k & LETTER != 0)`, eight ASCII bytes at a time: words are mostly ASCII letters.
#[inline(always)]
fn run_letters(s: &[u8], mut i: usize) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    loop {
        while i + 8 <= s.len() {
            let w = u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
            // Per byte, bit 7 set where the byte is an ASCII letter: fold case, drop bit 7 so that
            // no sum carries into the next byte, then test 0x61 <= x <= 0x7A with two additions.
            let x = (w | 0x2020_2020_2020_2020) & 0x7F7F_7F7F_7F7F_7F7F;
            let at_least_a = x.wrapping_add(0x1F1F_1F1F_1F1F_1F1F);
            let above_z = x.wrapping_add(0x0505_0505_0505_0505);
            let letters = at_least_a & !above_z & !w & HIGH;
            if letters != HIGH {
                i += ((!letters & HIGH).trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        // The byte at `i` is not an ASCII letter, or fewer than 8 bytes are left.
        if i >= s.len() {
            return i;
        }
        let (k, len) = class_len_at(s, i);
        if k & LETTER == 0 {
            return i;
        }
        i += len;
    }
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
        let (cl, len) = class_len_at(s, j);
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

/// The GPT-2 scanner: calls `f(start, end)` for each piece of `s`, in order.
#[inline(always)]
fn split_gpt2(s: &[u8], f: &mut impl OnPiece) {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        let end = 'piece: {
            // 's|'t|'re|'ve|'m|'ll|'d
            if b == b'\'' {
                let n = contraction(s, i, false);
                if n > 0 {
                    break 'piece i + n;
                }
            }
            // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class. The
            // run starts after the first character of that class, which is known to belong to it. A
            // space followed by whitespace is whitespace whichever character is looked at, so the
            // class is simply the next character's after a space (no branch to mispredict on it).
            let j = i + usize::from((b == b' ') & (i + 1 < s.len()));
            let (run_class, len) = class_len_at(s, j);
            let after = j + len;
            if run_class & LETTER != 0 {
                run_letters(s, after)
            } else if run_class & NUMBER != 0 {
                run(s, after, |k| k & NUMBER != 0)
            } else if run_class == OTHER {
                run(s, after, |k| k == OTHER)
            } else {
                whitespace_tail(s, i)
            }
        };
        f.on_piece(i, end);
        i = end;
    }
}

/// Llama 3 (`max_digits` = 3) and Qwen2 (`max_digits` = 1): calls `f(start, end)` for each piece.
#[inline(always)]
fn split_llama3(s: &[u8], max_digits: usize, f: &mut impl OnPiece) {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        let (cl, len) = class_len_at(s, i);
        let end = 'piece: {
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if cl & LETTER != 0 {
                break 'piece run_letters(s, i + len);
            }
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if b == b'\'' {
                let n = contraction(s, i, true);
                if n > 0 {
                    break 'piece i + n;
                }
            }
            if cl & NUMBER == 0 && b != b'\r' && b != b'\n' && i + len < s.len() {
                let (cl2, len2) = class_len_at(s, i + len);
                if cl2 & LETTER != 0 {
                    break 'piece run_letters(s, i + len + len2);
                }
            }
            // \p{N}{1,max_digits}
            if cl & NUMBER != 0 {
                let mut j = i + len;
                for _ in 1..max_digits {
                    if j == s.len() {
                        break;
                    }
                    match class_len_at(s, j) {
                        (k, l) if k & NUMBER != 0 => j += l,
                        _ => break,
                    }
                }
                break 'piece j;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let start = if b == b' ' {
                (i + 1 < s.len() && class_len_at(s, i + 1).0 == OTHER).then_some(i + 1)
            } else {
                (cl == OTHER).then_some(i)
            };
            if let Some(start) = start {
                let j = run(s, start, |k| k == OTHER);
                let mut e = j;
                while e < s.len() && (s[e] == b'\r' || s[e] == b'\n') {
                    e += 1;
                }
                break 'piece e;
            }
            // `\s*[\r\n]+`: the whitespace run up to and including its last newline.
            let mut j = i;
            let mut after_newline = None;
            while j < s.len() {
                let (k, l) = class_len_at(s, j);
                if k & SPACE == 0 {
                    break;
                }
                if s[j] == b'\r' || s[j] == b'\n' {
                    after_newline = Some(j + 1);
                }
                j += l;
            }
            if let Some(e) = after_newline {
                break 'piece e;
            }
            // \s+(?!\S)|\s+
            whitespace_tail(s, i)
        };
        f.on_piece(i, end);
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

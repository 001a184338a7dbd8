//! Character classes of the pre-tokenizer regexes: `\p{L}`, `\p{N}` and `\s`.
//!
//! `char::is_alphabetic` / `char::is_numeric` are *not* `\p{L}` / `\p{N}` (`is_alphabetic` includes
//! letter numbers and combining marks with `Other_Alphabetic`), so the classes are read from
//! `regex-syntax`'s Unicode tables, the same tables fancy-regex (tiktoken's engine) uses, and laid out
//! as a two-level lookup: one `u16` block index per 256 code points, then deduplicated 256-byte blocks.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// `\p{L}`: letters.
pub const LETTER: u8 = 1;
/// `\p{N}`: numbers.
pub const NUMBER: u8 = 2;
/// `\s`: Unicode `White_Space`.
pub const SPACE: u8 = 4;
/// Anything else (`[^\s\p{L}\p{N}]`).
pub const OTHER: u8 = 0;

struct Table {
    index: Vec<u16>,
    blocks: Vec<[u8; 256]>,
}

fn ranges(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new().parse(pattern).expect("a valid class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect(),
        other => unreachable!("{pattern} parsed to {other:?}"),
    }
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut flat = vec![OTHER; 0x110000];
        for (pattern, bit) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            for (lo, hi) in ranges(pattern) {
                for cp in lo..=hi {
                    flat[cp as usize] |= bit;
                }
            }
        }
        let mut blocks: Vec<[u8; 256]> = Vec::new();
        let mut seen = std::collections::HashMap::new();
        let index = flat
            .chunks_exact(256)
            .map(|chunk| {
                let block: [u8; 256] = chunk.try_into().expect("256 entries");
                *seen.entry(block).or_insert_with(|| {
                    blocks.push(block);
                    (blocks.len() - 1) as u16
                })
            })
            .collect();
        Table { index, blocks }
    })
}

/// ASCII classes, so that the common case never touches the big table.
const ASCII: [u8; 128] = {
    let mut t = [OTHER; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphabetic() {
            LETTER
        } else if c.is_ascii_digit() {
            NUMBER
        } else if matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r') {
            SPACE
        } else {
            OTHER
        };
        i += 1;
    }
    t
};

/// The class bits of `c` (a combination of [`LETTER`], [`NUMBER`], [`SPACE`]; `OTHER` is 0).
#[inline]
pub fn class(c: char) -> u8 {
    class_of(c as u32)
}

/// [`class`] of a code point (at most `0x10FFFF`).
#[inline]
pub fn class_of(cp: u32) -> u8 {
    if cp < 128 {
        ASCII[cp as usize]
    } else {
        let t = table();
        t.blocks[t.index[(cp >> 8) as usize] as usize][(cp & 0xFF) as usize]
    }
}

/// Marks, in [`BYTE_CLASS`], a byte that starts (or continues) a multi-byte character.
pub const MULTI: u8 = 0x80;

/// The class of each ASCII byte, and [`MULTI`] for the others: the pre-tokenizer's per-byte table.
pub const BYTE_CLASS: [u8; 256] = {
    let mut t = [MULTI; 256];
    let mut i = 0;
    while i < 128 {
        t[i] = ASCII[i];
        i += 1;
    }
    t
};

/// Forces the table to be built (so that timing and threads do not pay for it later).
pub fn init() {
    let _ = table();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_the_regex_engine_on_every_code_point() {
        let l = fancy_regex::Regex::new(r"^\p{L}$").unwrap();
        let n = fancy_regex::Regex::new(r"^\p{N}$").unwrap();
        let s = fancy_regex::Regex::new(r"^\s$").unwrap();
        // Every 7th code point plus the ASCII/Latin-1 range keeps the test fast while crossing every block.
        for cp in (0..0x110000u32).filter(|cp| cp % 7 == 0 || *cp < 0x400) {
            let Some(c) = char::from_u32(cp) else { continue };
            let mut buf = [0u8; 4];
            let text = c.encode_utf8(&mut buf);
            let want = (if l.is_match(text).unwrap() { LETTER } else { 0 })
                | (if n.is_match(text).unwrap() { NUMBER } else { 0 })
                | (if s.is_match(text).unwrap() { SPACE } else { 0 });
            assert_eq!(class(c), want, "U+{cp:04X}");
        }
    }

    #[test]
    fn std_predicates_differ_from_the_regex_classes() {
        // U+2160 ROMAN NUMERAL ONE is Nl: \p{N} and is_alphabetic, but not \p{L}.
        assert!('\u{2160}'.is_alphabetic());
        assert_eq!(class('\u{2160}'), NUMBER);
        // U+0345 COMBINING GREEK YPOGEGRAMMENI is Mn with Other_Alphabetic.
        assert!('\u{0345}'.is_alphabetic());
        assert_eq!(class('\u{0345}'), OTHER);
        assert_eq!(class('\u{3000}'), SPACE);
        assert_eq!(class('中'), LETTER);
    }
}

//! A string under normalization that remembers, for each of its bytes, the byte range of the original
//! text it came from (the model of Hugging Face's `NormalizedString`), so that token offsets can be
//! reported in the caller's text whatever the normalizer did.
//!
//! Every edit is expressed as a stream of `(char, change)` pairs over the current characters:
//! `change == 0` replaces the next character, `change > 0` inserts a character (it takes the alignment
//! of the byte before it), `change < 0` replaces the next character and removes `-change` more. This is
//! the form `unicode-normalization-alignments` yields for NFD/NFC/NFKD/NFKC, the crate Hugging Face uses,
//! so offsets agree with theirs even for composed and decomposed characters.

use unicode_normalization_alignments::UnicodeNormalization;

/// `(start, end)` byte range in the original text.
pub type Span = (u32, u32);

/// The string and, per byte, where it came from. Until the first edit that moves bytes around, the
/// alignment is the identity (`align` is empty and byte `i` came from byte `base + i`), which spares
/// the per-byte table for text that normalization leaves alone or changes byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub text: String,
    /// One span per byte of `text`, or empty while the alignment is the identity.
    align: Vec<Span>,
    identity: bool,
    /// Offsets are not wanted: edits touch the text only, and spans are meaningless.
    untracked: bool,
    base: u32,
    /// Where this string starts in the original text, as Hugging Face's `offsets_original().0` (the
    /// start of the original range it was made or sliced from; `u32::MAX` when unknown, untracked).
    pub origin: u32,
}

impl Normalized {
    /// `text` as it is, found at byte `base` of the original text.
    pub fn new(text: &str, base: usize) -> Self {
        Normalized {
            text: text.to_string(),
            align: Vec::new(),
            identity: true,
            untracked: false,
            base: base as u32,
            origin: base as u32,
        }
    }

    /// `text`, found at byte `base`, for an encode that reports no offsets: no alignment is kept.
    pub fn untracked(text: &str, base: usize) -> Self {
        Normalized {
            untracked: true,
            ..Normalized::new(text, base)
        }
    }

    /// Builds the per-byte table of an identity alignment.
    fn materialize(&mut self) {
        if !self.identity {
            return;
        }
        let base = self.base as usize;
        let mut align = Vec::with_capacity(self.text.len());
        for (i, c) in self.text.char_indices() {
            let span = ((base + i) as u32, (base + i + c.len_utf8()) as u32);
            align.extend(std::iter::repeat_n(span, c.len_utf8()));
        }
        self.align = align;
        self.identity = false;
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The original span of normalized bytes `start..end` (empty ranges map to an empty span).
    pub fn span(&self, start: usize, end: usize) -> Span {
        if self.untracked {
            return (0, 0);
        }
        if self.identity {
            // A byte inside a character (a byte-fallback token) stands for the whole character.
            let (mut s, mut e) = (start.min(self.text.len()), end.max(start).min(self.text.len()));
            while !self.text.is_char_boundary(s) {
                s -= 1;
            }
            while !self.text.is_char_boundary(e) {
                e += 1;
            }
            return (self.base + s as u32, self.base + e as u32);
        }
        if start >= end {
            let at = self
                .align
                .get(start)
                .map(|a| a.0)
                .unwrap_or_else(|| self.align.last().map_or(0, |a| a.1));
            return (at, at);
        }
        (self.align[start].0, self.align[end - 1].1)
    }

    /// The original span of the whole string.
    pub fn whole_span(&self) -> Span {
        self.span(0, self.text.len())
    }

    /// Bytes `start..end` as a string of their own, alignments kept.
    pub fn slice(&self, start: usize, end: usize) -> Normalized {
        Normalized {
            text: self.text[start..end].to_string(),
            align: if self.identity {
                Vec::new()
            } else {
                self.align[start..end].to_vec()
            },
            identity: self.identity,
            untracked: self.untracked,
            base: self.base + start as u32,
            origin: if self.untracked {
                u32::MAX
            } else {
                self.span(start, end).0
            },
        }
    }

    /// Applies a `(char, change)` stream (see the module docs); the first `skip` characters are
    /// removed before it starts.
    pub fn transform(&mut self, dest: impl IntoIterator<Item = (char, isize)>, skip: usize) {
        if self.untracked {
            self.text = dest.into_iter().map(|(c, _)| c).collect();
            return;
        }
        self.materialize();
        let old = std::mem::take(&mut self.text);
        let old_align = std::mem::take(&mut self.align);
        let mut chars = old.chars();
        let mut offset = 0usize;
        for _ in 0..skip {
            offset += chars.next().map_or(0, char::len_utf8);
        }
        let mut text = String::with_capacity(old.len());
        let mut align = Vec::with_capacity(old_align.len());
        for (c, change) in dest {
            let span = if change > 0 {
                if offset == 0 {
                    (0, 0)
                } else {
                    old_align[offset - 1]
                }
            } else {
                old_align[offset]
            };
            if change <= 0 {
                offset += chars.next().map_or(0, char::len_utf8);
            }
            for _ in 0..(-change.min(0)) {
                offset += chars.next().map_or(0, char::len_utf8);
            }
            text.push(c);
            align.extend(std::iter::repeat_n(span, c.len_utf8()));
        }
        self.text = text;
        self.align = align;
    }

    /// Maps each character to one character.
    pub fn map(&mut self, f: impl Fn(char) -> char) {
        if self.text.chars().all(|c| f(c) == c) {
            return;
        }
        if self.text.chars().all(|c| f(c).len_utf8() == c.len_utf8()) {
            // Same length for every character: bytes stay where they were, and so does the alignment.
            self.text = self.text.chars().map(&f).collect();
            return;
        }
        let dest: Vec<(char, isize)> = self.text.chars().map(|c| (f(c), 0)).collect();
        self.transform(dest, 0);
    }

    /// Keeps the characters `keep` accepts.
    pub fn filter(&mut self, keep: impl Fn(char) -> bool) {
        if self.text.chars().all(&keep) {
            return;
        }
        let mut dest = Vec::with_capacity(self.text.len());
        let (mut removed, mut removed_start) = (0isize, 0usize);
        let mut last: Option<char> = None;
        for c in self.text.chars() {
            if keep(c) {
                match last {
                    Some(l) => dest.push((l, -removed)),
                    None => removed_start = removed as usize,
                }
                last = Some(c);
                removed = 0;
            } else {
                removed += 1;
            }
        }
        if let Some(l) = last {
            dest.push((l, -removed));
        }
        self.transform(dest, removed_start);
    }

    /// Replaces each character by the characters `f` gives (the first replaces it, the others are
    /// inserted after it).
    pub fn flat_map<I: IntoIterator<Item = char>>(&mut self, f: impl Fn(char) -> I) {
        let mut dest = Vec::with_capacity(self.text.len());
        for c in self.text.chars() {
            for (i, d) in f(c).into_iter().enumerate() {
                dest.push((d, isize::from(i > 0)));
            }
        }
        self.transform(dest, 0);
    }

    pub fn lowercase(&mut self) {
        if self.text.is_ascii() {
            // Byte for byte: the alignment does not move.
            self.text.make_ascii_lowercase();
            return;
        }
        let unchanged = |c: char| {
            let mut l = c.to_lowercase();
            l.next() == Some(c) && l.next().is_none()
        };
        if self.text.chars().all(unchanged) {
            return;
        }
        self.flat_map(|c| c.to_lowercase());
    }

    pub fn nfd(&mut self) {
        if unicode_normalization_alignments::is_nfd_quick(self.text.chars())
            == unicode_normalization_alignments::IsNormalized::Yes
        {
            return;
        }
        let dest: Vec<(char, isize)> = self.text.nfd().collect();
        self.transform(dest, 0);
    }

    pub fn nfkd(&mut self) {
        if self.text.is_ascii() {
            return;
        }
        let dest: Vec<(char, isize)> = self.text.nfkd().collect();
        self.transform(dest, 0);
    }

    pub fn nfc(&mut self) {
        if unicode_normalization_alignments::is_nfc_quick(self.text.chars())
            == unicode_normalization_alignments::IsNormalized::Yes
        {
            return;
        }
        let dest: Vec<(char, isize)> = self.text.nfc().collect();
        self.transform(dest, 0);
    }

    pub fn nfkc(&mut self) {
        if unicode_normalization_alignments::is_nfkc_quick(self.text.chars())
            == unicode_normalization_alignments::IsNormalized::Yes
        {
            return;
        }
        let dest: Vec<(char, isize)> = self.text.nfkc().collect();
        self.transform(dest, 0);
    }

    /// Inserts `s` before the first character (which must exist); every inserted byte takes the first
    /// character's alignment.
    pub fn prepend(&mut self, s: &str) {
        let Some(first) = self.text.chars().next() else {
            return;
        };
        if self.untracked {
            self.text.insert_str(0, s);
            return;
        }
        self.materialize();
        let span = self.align[0];
        let n = first.len_utf8();
        let mut text = String::with_capacity(self.text.len() + s.len());
        text.push_str(s);
        text.push_str(&self.text);
        let mut align = Vec::with_capacity(text.len());
        align.extend(std::iter::repeat_n(span, s.len() + n));
        align.extend_from_slice(&self.align[n..]);
        self.text = text;
        self.align = align;
    }

    /// Appends `s`; its bytes take the last character's alignment.
    pub fn append(&mut self, s: &str) {
        if self.untracked {
            self.text.push_str(s);
            return;
        }
        self.materialize();
        let span = self.align.last().copied().unwrap_or((0, 0));
        self.text.push_str(s);
        self.align.extend(std::iter::repeat_n(span, s.len()));
    }

    /// Replaces every match of `re` (non-overlapping, left to right) by `content`, aligned as
    /// [`Normalized::replace`] aligns.
    pub fn replace_regex(&mut self, re: &fancy_regex::Regex, content: &str) {
        let matches: Vec<(usize, usize)> = re
            .find_iter(&self.text)
            .filter_map(|m| m.ok())
            .filter(|m| m.end() > m.start())
            .map(|m| (m.start(), m.end()))
            .collect();
        self.replace_ranges(&matches, content);
    }

    /// Replaces every occurrence of `pattern` (non-overlapping, left to right) by `content`; the new
    /// bytes take the alignment of the last byte of what they replace.
    pub fn replace(&mut self, pattern: &str, content: &str) {
        if pattern.is_empty() || !self.text.contains(pattern) {
            return;
        }
        let matches: Vec<(usize, usize)> = self
            .text
            .match_indices(pattern)
            .map(|(s, m)| (s, s + m.len()))
            .collect();
        self.replace_ranges(&matches, content);
    }

    fn replace_ranges(&mut self, matches: &[(usize, usize)], content: &str) {
        if matches.is_empty() {
            return;
        }
        if self.untracked {
            let mut text = String::with_capacity(self.text.len());
            let mut last = 0;
            for &(start, end) in matches {
                text.push_str(&self.text[last..start]);
                text.push_str(content);
                last = end;
            }
            text.push_str(&self.text[last..]);
            self.text = text;
            return;
        }
        self.materialize();
        let mut text = String::with_capacity(self.text.len());
        let mut align = Vec::with_capacity(self.align.len());
        let mut last = 0;
        for &(start, end) in matches {
            text.push_str(&self.text[last..start]);
            align.extend_from_slice(&self.align[last..start]);
            let span = self.align[end - 1];
            text.push_str(content);
            align.extend(std::iter::repeat_n(span, content.len()));
            last = end;
        }
        text.push_str(&self.text[last..]);
        align.extend_from_slice(&self.align[last..]);
        self.text = text;
        self.align = align;
    }

    /// Removes whitespace at the start (`left`) and/or end (`right`).
    pub fn strip(&mut self, left: bool, right: bool) {
        let start = if left {
            self.text.len() - self.text.trim_start().len()
        } else {
            0
        };
        let end = if right {
            self.text.trim_end().len()
        } else {
            self.text.len()
        };
        if start == 0 && end == self.text.len() {
            return;
        }
        let end = end.max(start);
        *self = self.slice(start, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_accents_keeps_the_base_letter_alignment() {
        let mut n = Normalized::new("café x", 0);
        n.nfd();
        n.filter(|c| !('\u{300}'..='\u{36f}').contains(&c));
        assert_eq!(n.text, "cafe x");
        // 'e' came from 'é' (bytes 3..5).
        assert_eq!(n.span(3, 4), (3, 5));
        assert_eq!(n.span(5, 6), (6, 7));
    }

    #[test]
    fn bytes_inside_a_character_map_to_the_whole_character() {
        let mut n = Normalized::new("a\u{80}", 5);
        assert_eq!(n.span(1, 2), (6, 8));
        assert_eq!(n.span(2, 3), (6, 8));
        n.prepend("x"); // the per-byte table gives the same answer
        assert_eq!(n.span(2, 3), (6, 8));
    }

    #[test]
    fn replace_prepend_and_lowercase_track_offsets() {
        let mut n = Normalized::new("Ab c", 10);
        n.replace(" ", "\u{2581}");
        n.prepend("\u{2581}");
        n.lowercase();
        assert_eq!(n.text, "\u{2581}ab\u{2581}c");
        assert_eq!(n.span(0, 3), (10, 11));
        assert_eq!(n.span(5, 8), (12, 13));
        assert_eq!(n.whole_span(), (10, 14));
        let mut d = Normalized::new("İ", 0); // lowercases to two characters
        d.lowercase();
        assert_eq!(d.text.chars().count(), 2);
        assert_eq!(d.whole_span(), (0, 2));
    }
}

//! GPT-2's byte-to-unicode table (Radford et al. 2019, `encoder.py` `bytes_to_unicode`).
//!
//! Byte-level BPE works on bytes, but vocabulary files spell every byte as a printable character so that
//! tokens are valid JSON strings: the 188 printable Latin-1 bytes stand for themselves and the other 68
//! (controls, space, soft hyphen, ...) are shifted to U+0100..U+0143. Hugging Face `tokenizers` and
//! tiktoken's `data_gym_to_mergeable_bpe_ranks` use the same table.

use std::sync::OnceLock;

/// The byte ↔ char tables, built once.
pub struct ByteLevel {
    /// `byte_to_char[b]`: the character that spells byte `b` in vocabulary files.
    pub byte_to_char: [char; 256],
    /// `(char, byte)` for the 256 spelling characters, sorted by char for binary search.
    char_to_byte: Vec<(char, u8)>,
}

impl ByteLevel {
    fn build() -> Self {
        let mut byte_to_char = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..=255u32 {
            let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
            byte_to_char[b as usize] = if printable {
                char::from_u32(b).expect("Latin-1 is valid")
            } else {
                n += 1;
                char::from_u32(255 + n).expect("U+0100..U+0143 is valid")
            };
        }
        let mut char_to_byte: Vec<(char, u8)> = byte_to_char.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        char_to_byte.sort_unstable();
        ByteLevel {
            byte_to_char,
            char_to_byte,
        }
    }

    /// The byte spelled by `c`, if `c` is one of the 256 spelling characters.
    #[inline]
    pub fn byte_of(&self, c: char) -> Option<u8> {
        if (c as u32) < 0x100 {
            // Latin-1 range: printable bytes spell themselves, the rest are not spelling characters.
            let b = c as u32 as u8;
            return (self.byte_to_char[b as usize] == c).then_some(b);
        }
        self.char_to_byte
            .binary_search_by_key(&c, |&(ch, _)| ch)
            .ok()
            .map(|i| self.char_to_byte[i].1)
    }

    /// Decodes a vocabulary spelling into bytes; `None` if some character is not a spelling character.
    pub fn decode(&self, token: &str) -> Option<Vec<u8>> {
        token.chars().map(|c| self.byte_of(c)).collect()
    }

    /// Spells `bytes` with the byte-level characters.
    pub fn encode(&self, bytes: &[u8]) -> String {
        bytes.iter().map(|&b| self.byte_to_char[b as usize]).collect()
    }
}

/// The process-wide tables.
pub fn byte_level() -> &'static ByteLevel {
    static TABLE: OnceLock<ByteLevel> = OnceLock::new();
    TABLE.get_or_init(ByteLevel::build)
}

/// The bytes a Hugging Face `ByteLevel` decoder produces for one token: the decoded spelling, or the
/// token's own UTF-8 when it contains a character outside the table (added tokens such as `<unk>` with
/// non-Latin text).
pub fn token_bytes(token: &str) -> Vec<u8> {
    byte_level().decode(token).unwrap_or_else(|| token.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection_with_gpt2_spellings() {
        let t = byte_level();
        assert_eq!(t.byte_to_char[b' ' as usize], 'Ġ');
        assert_eq!(t.byte_to_char[b'\n' as usize], 'Ċ');
        assert_eq!(t.byte_to_char[b'a' as usize], 'a');
        assert_eq!(t.byte_to_char[0xAD], 'Ń');
        for b in 0..=255u8 {
            assert_eq!(t.byte_of(t.byte_to_char[b as usize]), Some(b));
        }
        assert_eq!(t.byte_of('€'), None);
        assert_eq!(t.byte_of(' '), None);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(t.decode(&t.encode(&all)).unwrap(), all);
        assert_eq!(token_bytes("<|endoftext|>"), b"<|endoftext|>");
        assert_eq!(token_bytes("你好"), "你好".as_bytes());
    }
}

//! Decoders (Hugging Face's `decoders`): WordPiece, Metaspace, ByteFallback, Fuse, Strip, Replace.

use super::pre_tokenizer::PrependScheme;

/// One step of the decoder.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoder {
    WordPiece {
        prefix: String,
        cleanup: bool,
    },
    Metaspace {
        replacement: char,
        prepend_scheme: PrependScheme,
    },
    /// Runs of `<0xNN>` tokens become the text of their bytes (U+FFFD per byte if not UTF-8).
    ByteFallback,
    /// Joins every token into one.
    Fuse,
    /// Removes up to `start` leading and `stop` trailing `content` characters from each token.
    Strip {
        content: char,
        start: usize,
        stop: usize,
    },
    Replace {
        pattern: String,
        content: String,
    },
}

fn wordpiece_cleanup(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" do not", " don't")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

fn byte_token(t: &str) -> Option<u8> {
    if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
        u8::from_str_radix(&t[3..5], 16).ok()
    } else {
        None
    }
}

impl Decoder {
    pub(super) fn apply(&self, tokens: Vec<String>) -> Vec<String> {
        match self {
            Decoder::WordPiece { prefix, cleanup } => tokens
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    let t = if i == 0 {
                        t
                    } else if let Some(rest) = t.strip_prefix(prefix.as_str()) {
                        rest.to_string()
                    } else {
                        format!(" {t}")
                    };
                    if *cleanup {
                        wordpiece_cleanup(&t)
                    } else {
                        t
                    }
                })
                .collect(),
            Decoder::Metaspace {
                replacement,
                prepend_scheme,
            } => tokens
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    t.chars()
                        .filter_map(|c| {
                            if c != *replacement {
                                Some(c)
                            } else if i == 0 && *prepend_scheme != PrependScheme::Never {
                                None
                            } else {
                                Some(' ')
                            }
                        })
                        .collect()
                })
                .collect(),
            Decoder::ByteFallback => {
                let mut out = Vec::with_capacity(tokens.len());
                let mut bytes: Vec<u8> = Vec::new();
                let flush = |bytes: &mut Vec<u8>, out: &mut Vec<String>| {
                    if bytes.is_empty() {
                        return;
                    }
                    match String::from_utf8(std::mem::take(bytes)) {
                        Ok(s) => out.push(s),
                        Err(e) => out.extend(std::iter::repeat_n("\u{fffd}".to_string(), e.as_bytes().len())),
                    }
                };
                for t in tokens {
                    match byte_token(&t) {
                        Some(b) => bytes.push(b),
                        None => {
                            flush(&mut bytes, &mut out);
                            out.push(t);
                        }
                    }
                }
                flush(&mut bytes, &mut out);
                out
            }
            Decoder::Fuse => vec![tokens.concat()],
            Decoder::Strip { content, start, stop } => tokens
                .into_iter()
                .map(|t| {
                    let chars: Vec<char> = t.chars().collect();
                    let mut a = 0;
                    for (i, &c) in chars.iter().enumerate().take(*start) {
                        if c == *content {
                            a = i + 1;
                        } else {
                            break;
                        }
                    }
                    let mut b = chars.len();
                    for i in 0..*stop {
                        let Some(idx) = chars.len().checked_sub(i + 1) else {
                            break;
                        };
                        if chars[idx] == *content {
                            b = idx;
                        } else {
                            break;
                        }
                    }
                    chars[a.min(b)..b].iter().collect()
                })
                .collect(),
            Decoder::Replace { pattern, content } => tokens.into_iter().map(|t| t.replace(pattern, content)).collect(),
        }
    }
}

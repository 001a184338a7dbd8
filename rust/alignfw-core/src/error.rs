//! The one error type of alignfw-core; the PyO3 crate maps each variant to a Python exception.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Arguments of the wrong shape or value (maps to `alignfw.exceptions.InvalidInputError`).
    InvalidInput(String),
    /// A tokenizer file that cannot be parsed or uses an unsupported feature.
    TokenizerFormat(String),
    /// An id outside the vocabulary, invalid UTF-8 where text was required, and the like.
    Tokenize(String),
    /// Reading or writing a file failed.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m) | Error::TokenizerFormat(m) | Error::Tokenize(m) | Error::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

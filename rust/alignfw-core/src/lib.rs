//! alignfw-core: the pure-Rust hot paths of alignfw (no PyO3 here).
//!
//! - [`gae`]: generalized advantage estimation over `(batch, T)` arrays with response masks.
//! - [`added`]: added tokens (special and not) split off the text as Hugging Face does, for every family.
//! - [`bpe`]: byte-level BPE (pre-tokenize, train, encode, decode), Hugging Face compatible.
//! - [`pipeline`]: WordPiece, SentencePiece-style BPE and Unigram tokenizers read from `tokenizer.json`.
//! - [`parallel`]: reusable thread pools (the tokenizers' batches).

pub mod added;
pub mod bpe;
pub mod error;
pub mod gae;
pub mod parallel;
pub mod pipeline;

pub use error::Error;
pub use gae::{gae, gae_into};

//! alignfw-core: the pure-Rust hot paths of alignfw (no PyO3 here).
//!
//! - [`gae`]: generalized advantage estimation over `(batch, T)` arrays with response masks.
//! - [`bpe`]: byte-level BPE (pre-tokenize, train, encode, decode), Hugging Face compatible.

pub mod bpe;
pub mod error;
pub mod gae;

pub use error::Error;
pub use gae::{gae, gae_into};

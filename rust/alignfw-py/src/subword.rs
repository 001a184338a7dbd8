//! Bindings of the WordPiece / SentencePiece-BPE / Unigram tokenizers (issue 14). Registers
//! `SubwordTokenizer` and `is_byte_level_json` on `alignfw._native`.
//!
//! Same shape as the byte-level bindings: arguments checked under the GIL, work in `py.detach`
//! (batches on rayon threads, through [`crate::batch`]), results converted once.

use std::sync::Arc;

use alignfw_core::pipeline::{
    char_offsets, train_unigram, train_wordpiece, Encoding, Tokenizer, UnigramTrainerConfig, WordPieceTrainerConfig,
};
use alignfw_core::Error;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyDict, PyList};

use crate::batch::{self, FlatIds, IdLists};
use crate::errors::to_pyerr;
use crate::tokenizer::{parse_allowed, Text};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SubwordTokenizer>()?;
    m.add_function(wrap_pyfunction!(is_byte_level_json, m)?)
}

/// Whether a `tokenizer.json` text describes a byte-level BPE (`BpeTokenizer`) rather than another
/// family (`SubwordTokenizer`).
#[pyfunction]
fn is_byte_level_json(py: Python<'_>, json: PyBackedStr) -> PyResult<bool> {
    py.detach(|| {
        let root: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| Error::TokenizerFormat(format!("not valid JSON: {e}")))?;
        Ok(alignfw_core::pipeline::is_byte_level(&root))
    })
    .map_err(to_pyerr)
}

/// `(ids, character offsets)` of [`SubwordTokenizer::encode_with_offsets`].
type IdsOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// A WordPiece, SentencePiece-style BPE or Unigram tokenizer (private; use `alignfw.tokenizer.Tokenizer`).
#[pyclass(module = "alignfw._native", name = "SubwordTokenizer", frozen)]
pub struct SubwordTokenizer {
    inner: Arc<Tokenizer>,
    /// The ids' Python lists (`encode`, `encode_batch`).
    lists: IdLists,
}

impl SubwordTokenizer {
    fn wrap(t: Tokenizer) -> Self {
        let lists = IdLists::new(t.vocab_size());
        SubwordTokenizer {
            inner: Arc::new(t),
            lists,
        }
    }
}

#[pymethods]
impl SubwordTokenizer {
    /// Parses a Hugging Face `tokenizer.json` string.
    #[staticmethod]
    fn from_json(py: Python<'_>, json: PyBackedStr) -> PyResult<Self> {
        py.detach(|| Tokenizer::from_json(&json))
            .map(Self::wrap)
            .map_err(to_pyerr)
    }

    /// Trains a BERT-style WordPiece tokenizer (Hugging Face `WordPieceTrainer` semantics).
    #[staticmethod]
    #[pyo3(signature = (texts, vocab_size, min_frequency = 0, special_tokens = Vec::new(), limit_alphabet = None, unk_token = "[UNK]".to_string(), lowercase = true))]
    #[allow(clippy::too_many_arguments)]
    fn train_wordpiece(
        py: Python<'_>,
        texts: Vec<PyBackedStr>,
        vocab_size: usize,
        min_frequency: u64,
        special_tokens: Vec<String>,
        limit_alphabet: Option<usize>,
        unk_token: String,
        lowercase: bool,
    ) -> PyResult<Self> {
        let config = WordPieceTrainerConfig {
            vocab_size,
            min_frequency,
            special_tokens,
            limit_alphabet,
            unk_token,
            lowercase,
        };
        py.detach(|| train_wordpiece(&texts, &config))
            .map(Self::wrap)
            .map_err(to_pyerr)
    }

    /// Trains a T5-style Unigram tokenizer (Hugging Face `UnigramTrainer` semantics).
    #[staticmethod]
    #[pyo3(signature = (texts, vocab_size = 8000, special_tokens = vec!["<unk>".to_string()], unk_token = "<unk>".to_string(), n_sub_iterations = 2, shrinking_factor = 0.75, max_piece_length = 16, seed_size = 1_000_000))]
    #[allow(clippy::too_many_arguments)]
    fn train_unigram(
        py: Python<'_>,
        texts: Vec<PyBackedStr>,
        vocab_size: usize,
        special_tokens: Vec<String>,
        unk_token: String,
        n_sub_iterations: usize,
        shrinking_factor: f64,
        max_piece_length: usize,
        seed_size: usize,
    ) -> PyResult<Self> {
        let config = UnigramTrainerConfig {
            vocab_size,
            special_tokens,
            unk_token,
            n_sub_iterations,
            shrinking_factor,
            max_piece_length,
            seed_size,
        };
        py.detach(|| train_unigram(&texts, &config))
            .map(Self::wrap)
            .map_err(to_pyerr)
    }

    /// Encodes one text to a list of ids. `literal`: `(start, end)` character spans where no added
    /// token is matched (their text stays plain text).
    #[pyo3(signature = (text, allowed_special = None, add_special_tokens = false, literal = None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        add_special_tokens: bool,
        literal: Option<Vec<(usize, usize)>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let text = Text::extract(text)?;
        let allowed = parse_allowed(allowed_special)?;
        let t = &self.inner;
        let ids = py
            .detach(|| {
                let s = text.as_str()?;
                match &literal {
                    None => t.encode_ids(s, &allowed, add_special_tokens),
                    Some(spans) => t.encode_ids_literal(s, &allowed, add_special_tokens, spans),
                }
            })
            .map_err(to_pyerr)?;
        self.lists.list(py, &ids)
    }

    /// Encodes one text to `(ids, offsets)`, offsets being `(start, end)` character positions.
    #[pyo3(signature = (text, allowed_special = None, add_special_tokens = false))]
    fn encode_with_offsets<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        add_special_tokens: bool,
    ) -> PyResult<IdsOffsets> {
        let text = Text::extract(text)?;
        let allowed = parse_allowed(allowed_special)?;
        let t = &self.inner;
        py.detach(|| {
            let s = text.as_str()?;
            let Encoding { ids, offsets } = t.encode(s, &allowed, add_special_tokens)?;
            Ok((ids, char_offsets(s, &offsets)))
        })
        .map_err(to_pyerr)
    }

    /// Encodes many texts in parallel (rayon's pool, or a pool of `num_threads`).
    #[pyo3(signature = (texts, allowed_special = None, num_threads = None, add_special_tokens = false))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        num_threads: Option<usize>,
        add_special_tokens: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let t = &self.inner;
        batch::encode_lists(
            py,
            texts,
            allowed_special,
            num_threads,
            |texts, allowed| t.encode_batch(texts, allowed, add_special_tokens, false, num_threads),
            |e: &Encoding| e.ids.as_slice(),
            &self.lists,
        )
    }

    /// Encodes many texts into one flat `uint32` array of ids and `int64` offsets (`len(texts) + 1`).
    #[pyo3(signature = (texts, allowed_special = None, num_threads = None, add_special_tokens = false))]
    fn encode_batch_flat<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        num_threads: Option<usize>,
        add_special_tokens: bool,
    ) -> PyResult<FlatIds<'py>> {
        let t = &self.inner;
        batch::encode_flat(
            py,
            texts,
            allowed_special,
            |texts, allowed| t.encode_batch(texts, allowed, add_special_tokens, false, num_threads),
            |e: &Encoding| e.ids.as_slice(),
        )
    }

    /// Decodes ids to text through the tokenizer's decoder.
    #[pyo3(signature = (ids, skip_special_tokens = false))]
    fn decode(&self, py: Python<'_>, ids: Vec<u32>, skip_special_tokens: bool) -> PyResult<String> {
        let t = &self.inner;
        py.detach(|| t.decode(&ids, skip_special_tokens)).map_err(to_pyerr)
    }

    /// Decodes many id sequences in parallel.
    #[pyo3(signature = (batch, skip_special_tokens = false))]
    fn decode_batch(&self, py: Python<'_>, batch: Vec<Vec<u32>>, skip_special_tokens: bool) -> PyResult<Vec<String>> {
        let t = &self.inner;
        py.detach(|| t.decode_batch(&batch, skip_special_tokens))
            .map_err(to_pyerr)
    }

    /// The `tokenizer.json` text it was read from.
    fn to_json(&self) -> String {
        self.inner.to_json().to_string()
    }

    /// `"WordPiece"`, `"BPE"` (SentencePiece-style) or `"Unigram"`.
    #[getter]
    fn family(&self) -> &'static str {
        self.inner.family()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id).map(str::to_string)
    }

    /// `{spelling: id}` of every token, added tokens included.
    fn get_vocab<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for id in 0..self.inner.vocab_size() as u32 {
            if let Some(s) = self.inner.id_to_token(id) {
                d.set_item(s, id)?;
            }
        }
        Ok(d)
    }

    /// Added tokens as `(content, id, special)`, in file order.
    fn added_tokens(&self) -> Vec<(String, u32, bool)> {
        self.inner
            .added_tokens()
            .iter()
            .map(|t| (t.content.clone(), t.id, t.special))
            .collect()
    }
}

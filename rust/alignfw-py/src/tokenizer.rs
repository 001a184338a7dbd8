//! Bindings of the byte-level BPE tokenizer (issue 3). Registers `BpeTokenizer` on `alignfw._native`.
//!
//! Every method validates its arguments under the GIL, does the work in `py.detach` (encode, decode,
//! training and file I/O all run without the GIL, batches on rayon threads) and converts the result
//! once. Texts are borrowed from the Python objects (`PyBackedStr`), not copied.

use std::sync::Arc;

use alignfw_core::bpe::{AllowedSpecial, Pattern, Tokenizer, TrainerConfig};
use alignfw_core::Error;
use pyo3::exceptions::PyUnicodeEncodeError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::batch::{self, FlatIds, IdLists};
use crate::errors::to_pyerr;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BpeTokenizer>()
}

/// `(ids, character offsets)` of [`BpeTokenizer::encode_with_offsets`].
type IdsOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// A text argument: `str`, or `bytes` that must be UTF-8.
pub(crate) enum Text {
    Str(PyBackedStr),
    Bytes(PyBackedBytes),
}

impl Text {
    pub(crate) fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(s) = obj.cast::<PyString>() {
            return s.clone().try_into().map(Text::Str).map_err(|e: PyErr| {
                if e.is_instance_of::<PyUnicodeEncodeError>(obj.py()) {
                    to_pyerr(Error::Tokenize(format!(
                        "text is not valid Unicode (it contains a lone surrogate): {}",
                        e.value(obj.py())
                    )))
                } else {
                    e
                }
            });
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Text::Bytes(b.clone().into()));
        }
        Err(to_pyerr(Error::InvalidInput(format!(
            "text must be str or UTF-8 bytes, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into())
        ))))
    }

    /// The text as `&str`; invalid UTF-8 bytes are an error naming the offset.
    pub(crate) fn as_str(&self) -> Result<&str, Error> {
        match self {
            Text::Str(s) => Ok(s),
            Text::Bytes(b) => std::str::from_utf8(b).map_err(|e| {
                Error::Tokenize(format!(
                    "text is not valid UTF-8: invalid byte at offset {}",
                    e.valid_up_to()
                ))
            }),
        }
    }
}

pub(crate) fn parse_allowed(obj: Option<&Bound<'_, PyAny>>) -> PyResult<AllowedSpecial> {
    let Some(obj) = obj else {
        return Ok(AllowedSpecial::None);
    };
    if obj.is_none() {
        return Ok(AllowedSpecial::None);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return match s.to_str()? {
            "all" => Ok(AllowedSpecial::All),
            other => Err(to_pyerr(Error::InvalidInput(format!(
                "allowed_special must be \"all\" or a collection of special tokens, got the string {other:?}"
            )))),
        };
    }
    let mut names = Vec::new();
    for item in obj.try_iter()? {
        names.push(item?.extract::<String>()?);
    }
    Ok(if names.is_empty() {
        AllowedSpecial::None
    } else {
        AllowedSpecial::Some(names)
    })
}

fn parse_pattern(pattern: &str) -> PyResult<Pattern> {
    Pattern::from_name_or_regex(pattern).map_err(to_pyerr)
}

/// A byte-level BPE tokenizer (private; use `alignfw.tokenizer.Tokenizer`).
#[pyclass(module = "alignfw._native", name = "BpeTokenizer", frozen)]
pub struct BpeTokenizer {
    inner: Arc<Tokenizer>,
    /// The ids' Python lists (`encode`, `encode_batch`).
    lists: IdLists,
}

impl BpeTokenizer {
    fn wrap(t: Tokenizer) -> Self {
        let lists = IdLists::new(t.vocab_size());
        BpeTokenizer {
            inner: Arc::new(t),
            lists,
        }
    }
}

#[pymethods]
impl BpeTokenizer {
    /// Parses a Hugging Face `tokenizer.json` string.
    #[staticmethod]
    fn from_json(py: Python<'_>, json: PyBackedStr) -> PyResult<Self> {
        py.detach(|| Tokenizer::from_json(&json))
            .map(Self::wrap)
            .map_err(to_pyerr)
    }

    /// Reads a Hugging Face `tokenizer.json` file.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        py.detach(|| {
            let json = std::fs::read_to_string(&path)
                .map_err(|e| Error::Io(format!("cannot read tokenizer file {}: {e}", path.display())))?;
            Tokenizer::from_json(&json)
        })
        .map(Self::wrap)
        .map_err(to_pyerr)
    }

    /// Reads GPT-2 style `vocab.json` + `merges.txt`.
    #[staticmethod]
    #[pyo3(signature = (vocab_path, merges_path, pattern = "gpt2", special_tokens = Vec::new()))]
    fn from_vocab_merges(
        py: Python<'_>,
        vocab_path: std::path::PathBuf,
        merges_path: std::path::PathBuf,
        pattern: &str,
        special_tokens: Vec<String>,
    ) -> PyResult<Self> {
        let pattern = parse_pattern(pattern)?;
        py.detach(|| {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| Error::Io(format!("cannot read {}: {e}", p.display())))
            };
            Tokenizer::from_vocab_merges(&read(&vocab_path)?, &read(&merges_path)?, pattern, &special_tokens)
        })
        .map(Self::wrap)
        .map_err(to_pyerr)
    }

    /// Trains on text files (Hugging Face `BpeTrainer` semantics, byte-level alphabet).
    #[staticmethod]
    #[pyo3(signature = (files, vocab_size, min_frequency = 0, special_tokens = Vec::new(), pattern = "gpt2"))]
    fn train(
        py: Python<'_>,
        files: Vec<String>,
        vocab_size: usize,
        min_frequency: u64,
        special_tokens: Vec<String>,
        pattern: &str,
    ) -> PyResult<Self> {
        let config = TrainerConfig {
            vocab_size,
            min_frequency,
            special_tokens,
            pattern: parse_pattern(pattern)?,
        };
        py.detach(|| Tokenizer::train_from_files(&files, &config))
            .map(Self::wrap)
            .map_err(to_pyerr)
    }

    /// Trains on in-memory texts.
    #[staticmethod]
    #[pyo3(signature = (texts, vocab_size, min_frequency = 0, special_tokens = Vec::new(), pattern = "gpt2"))]
    fn train_from_texts(
        py: Python<'_>,
        texts: Vec<PyBackedStr>,
        vocab_size: usize,
        min_frequency: u64,
        special_tokens: Vec<String>,
        pattern: &str,
    ) -> PyResult<Self> {
        let config = TrainerConfig {
            vocab_size,
            min_frequency,
            special_tokens,
            pattern: parse_pattern(pattern)?,
        };
        py.detach(|| Tokenizer::train_from_texts(&texts, &config))
            .map(Self::wrap)
            .map_err(to_pyerr)
    }

    /// Encodes one text (`str` or UTF-8 `bytes`) to a list of ids. `literal`: `(start, end)`
    /// character spans where no added token is matched (their text stays plain text).
    #[pyo3(signature = (text, allowed_special = None, literal = None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        literal: Option<Vec<(usize, usize)>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let text = Text::extract(text)?;
        let allowed = parse_allowed(allowed_special)?;
        let t = &self.inner;
        batch::with_ids_buffer(|ids| {
            py.detach(|| t.encode_into(text.as_str()?, &allowed, literal.as_deref().unwrap_or_default(), ids))
                .map_err(to_pyerr)?;
            self.lists.list(py, ids)
        })
    }

    /// Encodes one text to `(ids, offsets)`, offsets being `(start, end)` character positions.
    #[pyo3(signature = (text, allowed_special = None))]
    fn encode_with_offsets<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<IdsOffsets> {
        let text = Text::extract(text)?;
        let allowed = parse_allowed(allowed_special)?;
        let t = &self.inner;
        py.detach(|| {
            let s = text.as_str()?;
            let (ids, offsets) = t.encode_with_offsets(s, &allowed)?;
            Ok((ids, alignfw_core::pipeline::char_offsets(s, &offsets)))
        })
        .map_err(to_pyerr)
    }

    /// Encodes many texts in parallel (rayon's pool, or a pool of `num_threads`).
    #[pyo3(signature = (texts, allowed_special = None, num_threads = None))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let t = &self.inner;
        batch::encode_lists(
            py,
            texts,
            allowed_special,
            num_threads,
            |texts, allowed| t.encode_batch(texts, allowed, num_threads),
            |ids: &Vec<u32>| ids.as_slice(),
            &self.lists,
        )
    }

    /// Encodes many texts into one flat `uint32` array of ids and `int64` offsets (`len(texts) + 1`):
    /// the ids of text `i` are `ids[offsets[i]:offsets[i + 1]]`. No Python object per id.
    #[pyo3(signature = (texts, allowed_special = None, num_threads = None))]
    fn encode_batch_flat<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        allowed_special: Option<&Bound<'py, PyAny>>,
        num_threads: Option<usize>,
    ) -> PyResult<FlatIds<'py>> {
        let t = &self.inner;
        batch::encode_flat(
            py,
            texts,
            allowed_special,
            |texts, allowed| t.encode_batch(texts, allowed, num_threads),
            |ids: &Vec<u32>| ids.as_slice(),
        )
    }

    /// The pieces the pre-tokenizer splits `text` into (after normalization; added tokens not split off).
    fn pre_tokenize(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        let text = Text::extract(text)?;
        let t = &self.inner;
        py.detach(|| t.pre_tokenize(text.as_str()?)).map_err(to_pyerr)
    }

    /// Decodes ids to text (invalid UTF-8 at token boundaries becomes U+FFFD, as in Hugging Face).
    #[pyo3(signature = (ids, skip_special_tokens = false))]
    fn decode(&self, py: Python<'_>, ids: Vec<u32>, skip_special_tokens: bool) -> PyResult<String> {
        let t = &self.inner;
        py.detach(|| t.decode(&ids, skip_special_tokens)).map_err(to_pyerr)
    }

    /// Decodes ids to the raw bytes.
    #[pyo3(signature = (ids, skip_special_tokens = false))]
    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
        skip_special_tokens: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let t = &self.inner;
        let bytes = py
            .detach(|| t.decode_bytes(&ids, skip_special_tokens))
            .map_err(to_pyerr)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Decodes many id sequences in parallel.
    #[pyo3(signature = (batch, skip_special_tokens = false))]
    fn decode_batch(&self, py: Python<'_>, batch: Vec<Vec<u32>>, skip_special_tokens: bool) -> PyResult<Vec<String>> {
        let t = &self.inner;
        py.detach(|| t.decode_batch(&batch, skip_special_tokens))
            .map_err(to_pyerr)
    }

    /// The Hugging Face `tokenizer.json` text.
    fn to_json(&self, py: Python<'_>) -> String {
        let t = &self.inner;
        py.detach(|| t.to_json())
    }

    /// Writes `tokenizer.json` to `path`.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let t = &self.inner;
        py.detach(|| {
            std::fs::write(&path, t.to_json()).map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
        })
        .map_err(to_pyerr)
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    /// The pre-tokenizer regex, if any.
    #[getter]
    fn pattern(&self) -> Option<String> {
        self.inner.pattern().map(str::to_string)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id).map(str::to_string)
    }

    /// The bytes token `id` stands for, or `None`.
    fn id_to_bytes<'py>(&self, py: Python<'py>, id: u32) -> Option<Bound<'py, PyBytes>> {
        self.inner.id_to_bytes(id).map(|b| PyBytes::new(py, b))
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

    /// The model vocabulary as `(bytes, id)` sorted by id (tiktoken's mergeable ranks).
    fn byte_vocab<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, PyBytes>, u32)> {
        self.inner
            .byte_vocab()
            .into_iter()
            .map(|(b, i)| (PyBytes::new(py, &b), i))
            .collect()
    }
}

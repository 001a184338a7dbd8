//! The batch calls of both tokenizer bindings (`BpeTokenizer`, `SubwordTokenizer`): texts borrowed
//! from the Python objects, encoded on rayon threads without the GIL, results converted once.
//!
//! Between the two sides of the boundary nothing is copied per text: each `str` is read in place
//! through its cached UTF-8 form (`PyBackedStr`), and the flat form is assembled while the GIL is
//! released. Only the per-text id lists (`encode_batch`) are built under the GIL, with the cyclic
//! garbage collector paused ([`GcPause`]).

use alignfw_core::bpe::AllowedSpecial;
use alignfw_core::Error;
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::errors::to_pyerr;
use crate::tokenizer::{parse_allowed, Text};

/// `(ids, offsets)` of the `encode_batch_flat` methods.
pub(crate) type FlatIds<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<i64>>);

/// Reads `texts` (a sequence of `str` or UTF-8 `bytes`) and `allowed_special`, then runs
/// `encode(texts, allowed)` with the GIL released.
fn run<R: Send>(
    py: Python<'_>,
    texts: &Bound<'_, PyAny>,
    allowed_special: Option<&Bound<'_, PyAny>>,
    encode: impl FnOnce(&[&str], &AllowedSpecial) -> Result<R, Error> + Send,
) -> PyResult<R> {
    let texts = extract_texts(texts)?;
    let allowed = parse_allowed(allowed_special)?;
    py.detach(|| {
        let strs = texts.iter().map(Text::as_str).collect::<Result<Vec<&str>, Error>>()?;
        encode(&strs, &allowed)
    })
    .map_err(to_pyerr)
}

/// A batch as one Python list of per-text lists; `list` converts one result.
pub(crate) fn encode_lists<'py, R: Send>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    allowed_special: Option<&Bound<'py, PyAny>>,
    encode: impl FnOnce(&[&str], &AllowedSpecial) -> Result<Vec<R>, Error> + Send,
    list: impl Fn(&R) -> PyResult<Bound<'py, PyList>>,
) -> PyResult<Bound<'py, PyList>> {
    let batch = run(py, texts, allowed_special, encode)?;
    let _paused = GcPause::new(py);
    let lists = batch.iter().map(list).collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, lists)
}

/// A batch as one flat `uint32` array of ids and `int64` offsets (`len(texts) + 1`): the ids of text
/// `i` are `ids[offsets[i]:offsets[i + 1]]`. `ids_of` reads one result's ids.
pub(crate) fn encode_flat<'py, R: Send>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    allowed_special: Option<&Bound<'py, PyAny>>,
    encode: impl FnOnce(&[&str], &AllowedSpecial) -> Result<Vec<R>, Error> + Send,
    ids_of: impl Fn(&R) -> &[u32] + Send,
) -> PyResult<FlatIds<'py>> {
    let (ids, offsets) = run(py, texts, allowed_special, move |strs, allowed| {
        let batch = encode(strs, allowed)?;
        let mut offsets = Vec::with_capacity(batch.len() + 1);
        offsets.push(0i64);
        let mut ids = Vec::with_capacity(batch.iter().map(|r| ids_of(r).len()).sum());
        for r in &batch {
            ids.extend_from_slice(ids_of(r));
            offsets.push(ids.len() as i64);
        }
        Ok((ids, offsets))
    })?;
    Ok((ids.into_pyarray(py), offsets.into_pyarray(py)))
}

/// The texts of a batch; a single text is refused (iterating it would encode each character).
fn extract_texts(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Text>> {
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(to_pyerr(Error::InvalidInput(
            "texts must be a sequence of texts, not a single text".into(),
        )));
    }
    obj.try_iter()?.map(|item| Text::extract(&item?)).collect()
}

/// Pauses CPython's cyclic garbage collector while a batch's lists are built and restores its
/// previous state on drop. Every new list counts as a container allocation, so a batch of 30k lists
/// otherwise sets off dozens of collections that each walk the lists built so far, and every object
/// the process holds once those reach the oldest generation (measured on the benchmark corpus: a
/// 1-thread `encode_batch` 413 -> 312 ms). Lists of ints cannot form cycles, and the GIL is held for
/// the guard's whole life, so no other Python code sees the pause; the deferred collection runs at
/// the next allocation after it.
struct GcPause<'py> {
    was_enabled: bool,
    _gil: Python<'py>,
}

impl<'py> GcPause<'py> {
    fn new(py: Python<'py>) -> Self {
        // SAFETY: the GIL is held: the guard keeps the `Python` token for its whole life.
        let was_enabled = unsafe { pyo3::ffi::PyGC_Disable() } != 0;
        GcPause { was_enabled, _gil: py }
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if self.was_enabled {
            // SAFETY: as in `new`.
            unsafe { pyo3::ffi::PyGC_Enable() };
        }
    }
}

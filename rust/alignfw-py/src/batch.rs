//! The batch calls of both tokenizer bindings (`BpeTokenizer`, `SubwordTokenizer`): texts borrowed
//! from the Python objects, encoded on rayon threads without the GIL, results converted once.
//!
//! Between the two sides of the boundary nothing is copied per text: each `str` is read in place
//! through its cached UTF-8 form (`PyBackedStr`), and the flat form is assembled while the GIL is
//! released. Only the per-text id lists (`encode_batch`) are built under the GIL ([`IdLists`]).

use std::cell::RefCell;

use alignfw_core::bpe::AllowedSpecial;
use alignfw_core::Error;
use numpy::{IntoPyArray, PyArray1};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
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

/// A batch as one Python list of per-text lists; `lists` builds each result's list from its ids.
pub(crate) fn encode_lists<'py, R: Send>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    allowed_special: Option<&Bound<'py, PyAny>>,
    encode: impl FnOnce(&[&str], &AllowedSpecial) -> Result<Vec<R>, Error> + Send,
    ids_of: impl Fn(&R) -> &[u32],
    lists: &IdLists,
) -> PyResult<Bound<'py, PyList>> {
    let batch = run(py, texts, allowed_special, encode)?;
    let out = batch
        .iter()
        .map(|r| lists.list(py, ids_of(r)))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, out)
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

/// Runs `f` with this thread's empty buffer of ids, which `encode` fills and reads its list from: a
/// fresh `Vec` per call cost a `malloc`, and for long texts fresh pages, each time. A call made while
/// the buffer is in use (from a finalizer that the list's allocation let run) gets a new one, and a
/// buffer grown past 4 MiB is not kept.
pub(crate) fn with_ids_buffer<R>(f: impl FnOnce(&mut Vec<u32>) -> R) -> R {
    const MAX_KEPT: usize = 1 << 20;
    thread_local! {
        static IDS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }
    IDS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut ids) => {
            ids.clear();
            let r = f(&mut ids);
            if ids.capacity() > MAX_KEPT {
                *ids = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Python lists of ids. One Python int per id of the vocabulary is made once, so a list costs a
/// reference-count increment per element instead of an int allocation (the conversion runs under the
/// GIL, so it bounds how well batches scale).
///
/// The lists are created untracked by CPython's cyclic garbage collector, as CPython itself untracks
/// tuples and dicts that hold only atomic values: a list of ints cannot be part of a cycle. Tracked,
/// every list was a container the collector walked again at each collection of its generation, and
/// every ~700 new lists set one off; a loop that keeps its results (`[tok.encode(d) for d in docs]`)
/// spent about a quarter of its time there. A cycle made later through such a list (`ids.append(ids)`)
/// is reclaimed only once broken by hand.
pub(crate) struct IdLists {
    ints: PyOnceLock<Vec<Py<PyAny>>>,
    vocab_size: usize,
}

impl IdLists {
    pub(crate) fn new(vocab_size: usize) -> Self {
        IdLists {
            ints: PyOnceLock::new(),
            vocab_size,
        }
    }

    /// The list of `ids`, which must all be below the vocabulary size (encoders produce only those).
    pub(crate) fn list<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyList>> {
        let ints = self.ints.get_or_init(py, || {
            (0..self.vocab_size as u32)
                .map(|i| {
                    i.into_pyobject(py)
                        .expect("int conversion cannot fail")
                        .into_any()
                        .unbind()
                })
                .collect()
        });
        let len = ffi::Py_ssize_t::try_from(ids.len()).expect("a slice's length fits isize");
        // SAFETY: the GIL is held (`py`). `PyList_New` gives a new reference (null on failure) to a
        // list of `len` empty slots; `PyList_SetItem` fills slot `i < len` with a reference it takes
        // over, which `new_ref` makes to an int that `ints` keeps alive.
        unsafe {
            let list = ffi::PyList_New(len);
            if list.is_null() {
                return Err(PyErr::fetch(py));
            }
            let list = Bound::from_owned_ptr(py, list).cast_into_unchecked::<PyList>();
            for (i, &id) in ids.iter().enumerate() {
                let int = ints[id as usize].as_ptr();
                new_ref(int);
                ffi::PyList_SetItem(list.as_ptr(), i as ffi::Py_ssize_t, int);
            }
            ffi::PyObject_GC_UnTrack(list.as_ptr().cast());
            Ok(list)
        }
    }
}

/// `Py_INCREF` written inline. Under the limited API PyO3 calls the interpreter's `_Py_IncRef` for
/// each one, and at one per id that call was 11% of `encode` on one thread. CPython's own header
/// inlines the increment for stable-ABI builds older than 3.12 (such as this abi3-py310 one), and
/// 3.12+ runs those unchanged. This is the immortality-aware form of the 3.12-3.14 headers, which
/// holds on every version from 3.10: the low 32 bits of `ob_refcnt` are the count, negative as an
/// `i32` on an immortal object (the small ints, from 3.12), whose count must stay as it is. (A mortal
/// object would need 2^31 references to look immortal.)
///
/// # Safety
/// `obj` is a live object, the GIL is held, and the build is not free-threaded (abi3 never is).
#[inline(always)]
unsafe fn new_ref(obj: *mut ffi::PyObject) {
    #[cfg(all(target_pointer_width = "64", target_endian = "little"))]
    {
        let count = obj.cast::<u32>();
        let n = *count;
        if (n as i32) >= 0 {
            *count = n + 1;
        }
    }
    #[cfg(not(all(target_pointer_width = "64", target_endian = "little")))]
    ffi::Py_INCREF(obj);
}

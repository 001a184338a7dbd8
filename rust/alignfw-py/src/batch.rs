//! The batch calls of both tokenizer bindings (`BpeTokenizer`, `SubwordTokenizer`): texts borrowed
//! from the Python objects, encoded on rayon threads without the GIL, results converted once.
//!
//! Between the two sides of the boundary nothing is copied per text: each `str` is read in place
//! through its cached UTF-8 form (`PyBackedStr`), and the flat form is assembled while the GIL is
//! released. The per-text id lists (`encode_batch`) are allocated under the GIL and, for large
//! batches, filled on the threads without it ([`IdLists::batch`]).

use std::cell::RefCell;
use std::ops::Range;

use alignfw_core::bpe::AllowedSpecial;
use alignfw_core::Error;
use numpy::{IntoPyArray, PyArray1};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString};
use rayon::prelude::*;

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

/// A batch as one Python list of per-text lists, which `lists` builds from each result's ids on
/// `num_threads` threads (the threads `encode` ran on).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_lists<'py, R: Send + Sync>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    allowed_special: Option<&Bound<'py, PyAny>>,
    num_threads: Option<usize>,
    encode: impl FnOnce(&[&str], &AllowedSpecial) -> Result<Vec<R>, Error> + Send,
    ids_of: impl Fn(&R) -> &[u32] + Sync,
    lists: &IdLists,
) -> PyResult<Bound<'py, PyList>> {
    let batch = run(py, texts, allowed_special, encode)?;
    lists.batch(py, &batch, ids_of, num_threads)
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
/// reference-count increment per element instead of an int allocation.
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

/// The smallest batch, in ids, whose lists are filled on several threads, with the vocabulary's size
/// if that is larger: below it the fixed cost (a count per vocabulary entry to zero, merge and apply)
/// outweighs half the fill. (Measured on 2 threads with GPT-2's and Llama 3's vocabularies.)
const PARALLEL_MIN_IDS: usize = 1 << 15;

impl IdLists {
    pub(crate) fn new(vocab_size: usize) -> Self {
        IdLists {
            ints: PyOnceLock::new(),
            vocab_size,
        }
    }

    /// The cached int of every id, made on first use.
    fn ints(&self, py: Python<'_>) -> &[Py<PyAny>] {
        self.ints.get_or_init(py, || {
            (0..self.vocab_size as u32)
                .map(|i| {
                    i.into_pyobject(py)
                        .expect("int conversion cannot fail")
                        .into_any()
                        .unbind()
                })
                .collect()
        })
    }

    /// The list of `ids`, which must all be below the vocabulary size (encoders produce only those).
    pub(crate) fn list<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyList>> {
        let ints = self.ints(py);
        let list = empty_list(py, ids.len())?;
        // SAFETY: the GIL is held; slot `i < len` of the new list is empty and takes over the
        // reference that `add_refs` makes to an int that `ints` keeps alive.
        unsafe {
            for (i, &id) in ids.iter().enumerate() {
                let int = ints[id as usize].as_ptr();
                add_refs(int, 1);
                ffi::PyList_SetItem(list.as_ptr(), i as ffi::Py_ssize_t, int);
            }
        }
        Ok(list)
    }

    /// The list of every result's list. A small batch is built by [`IdLists::list`], one list after
    /// the other under the GIL: a sixth of a batch's time on one thread, and serial on any number. A
    /// large one only allocates its lists under the GIL; their slots are filled on `num_threads`
    /// threads without it, each counting the references it stores per id, and the counts are added to
    /// the ints' reference counts once the GIL is back. Until then no Python code can reach the lists,
    /// and no int can be freed (`ints` holds each).
    pub(crate) fn batch<'py, R: Sync>(
        &self,
        py: Python<'py>,
        results: &[R],
        ids_of: impl Fn(&R) -> &[u32] + Sync,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let threads = num_threads.unwrap_or_else(rayon::current_num_threads);
        let total: usize = results.iter().map(|r| ids_of(r).len()).sum();
        let few = total < PARALLEL_MIN_IDS.max(self.vocab_size);
        // From 2^31 added references an int's count could look immortal (`add_refs`).
        let huge = total > i32::MAX as usize;
        if threads < 2 || few || huge || !slots_readable(py) {
            let lists = results
                .iter()
                .map(|r| self.list(py, ids_of(r)))
                .collect::<PyResult<Vec<_>>>()?;
            return PyList::new(py, lists);
        }
        let ints = self.ints(py);
        let lists = results
            .iter()
            .map(|r| empty_list(py, ids_of(r).len()))
            .collect::<PyResult<Vec<_>>>()?;
        // SAFETY: each list is new (so its slots are null and only this function can reach them), holds
        // `len(ids)` slots, and its layout was checked by `slots_readable`.
        let slots: Vec<Slots> = lists.iter().map(|l| unsafe { Slots::of(l) }).collect();
        // The references each part stored, per id, summed; and whether every id was in the
        // vocabulary (the slots of an invalid one and after it in its text are left null).
        let fill = || {
            let parts = balanced_parts(results, &ids_of, threads);
            let counts: Vec<(Vec<u32>, bool)> = parts
                .into_par_iter()
                .map(|range| {
                    let mut counts = vec![0u32; ints.len()];
                    let mut valid = true;
                    for (r, slots) in results[range.clone()].iter().zip(&slots[range]) {
                        for (i, &id) in ids_of(r).iter().enumerate() {
                            let Some(int) = ints.get(id as usize) else {
                                valid = false;
                                break;
                            };
                            // SAFETY: `i < len(ids)`, the list's length, and no other thread writes
                            // this list; the reference stored here is counted in `counts`.
                            unsafe { *slots.0.add(i) = int.as_ptr() };
                            counts[id as usize] += 1;
                        }
                    }
                    (counts, valid)
                })
                .collect();
            let valid = counts.iter().all(|(_, v)| *v);
            let mut counts = counts.into_iter().map(|(c, _)| c);
            let mut sum = counts.next().unwrap_or_default();
            for c in counts {
                sum.iter_mut().zip(&c).for_each(|(s, c)| *s += c);
            }
            (sum, valid)
        };
        // An error here (the pool did not start) comes before any slot is written.
        let (counts, valid) = py
            .detach(|| alignfw_core::parallel::install(num_threads, fill))
            .map_err(to_pyerr)?;
        for (int, &n) in ints.iter().zip(&counts) {
            if n != 0 {
                // SAFETY: the GIL is held and `int` is alive; `n` references to it were stored.
                unsafe { add_refs(int.as_ptr(), n) };
            }
        }
        if !valid {
            return Err(to_pyerr(Error::InvalidInput(
                "an encoder produced an id outside the vocabulary".into(),
            )));
        }
        PyList::new(py, lists)
    }
}

/// A new list of `len` empty (null) slots, untracked by the garbage collector (see [`IdLists`]).
fn empty_list(py: Python<'_>, len: usize) -> PyResult<Bound<'_, PyList>> {
    let len = ffi::Py_ssize_t::try_from(len).expect("a slice's length fits isize");
    // SAFETY: the GIL is held; `PyList_New` gives a new reference, or null with an exception set.
    unsafe {
        let list = ffi::PyList_New(len);
        if list.is_null() {
            return Err(PyErr::fetch(py));
        }
        ffi::PyObject_GC_UnTrack(list.cast());
        Ok(Bound::from_owned_ptr(py, list).cast_into_unchecked())
    }
}

/// The slot array of a list, which the threads filling it write through.
struct Slots(*mut *mut ffi::PyObject);

// SAFETY: each list's slots are written by one thread only, while the list's owner waits.
unsafe impl Send for Slots {}
unsafe impl Sync for Slots {}

impl Slots {
    /// The limited API has no access to a list's slots but `PyList_SetItem`, which needs the GIL;
    /// CPython's `PyListObject` keeps their array right after the variable-size object header
    /// (`ob_item`), as it has since Python 2. [`slots_readable`] checks this on the running
    /// interpreter.
    ///
    /// # Safety
    /// `list` is a list, and [`slots_readable`] returned true.
    unsafe fn of(list: &Bound<'_, PyList>) -> Self {
        let field = list.as_ptr().cast::<u8>().add(std::mem::size_of::<ffi::PyVarObject>());
        Slots(*field.cast::<*mut *mut ffi::PyObject>())
    }
}

/// Whether [`Slots::of`] finds the slots of this interpreter's lists: a list of two known objects
/// must show exactly them there. Where it does not, every list is filled under the GIL.
fn slots_readable(py: Python<'_>) -> bool {
    static READABLE: PyOnceLock<bool> = PyOnceLock::new();
    *READABLE.get_or_init(py, || {
        let (a, b) = (PyList::empty(py).into_any(), PyBytes::new(py, b"b").into_any());
        let Ok(list) = PyList::new(py, [&a, &b]) else {
            return false;
        };
        // SAFETY: `list` is a list of two elements, so the field read is inside the object; its
        // slots are read only once the list's length says there are two.
        unsafe {
            let slots = Slots::of(&list).0;
            !slots.is_null()
                && ffi::PyList_Size(list.as_ptr()) == 2
                && *slots == a.as_ptr()
                && *slots.add(1) == b.as_ptr()
        }
    })
}

/// `results` cut into at most `parts` contiguous ranges of about the same number of ids.
fn balanced_parts<R>(results: &[R], ids_of: impl Fn(&R) -> &[u32], parts: usize) -> Vec<Range<usize>> {
    let total: usize = results.iter().map(|r| ids_of(r).len()).sum();
    let mut out = Vec::with_capacity(parts);
    let (mut start, mut seen) = (0, 0);
    for (i, r) in results.iter().enumerate() {
        seen += ids_of(r).len();
        if out.len() + 1 < parts && seen * parts >= total * (out.len() + 1) {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    out.push(start..results.len());
    out
}

/// `n` `Py_INCREF`s written inline, for a list's references to the cached ints. Under the limited API
/// PyO3 calls the interpreter's `_Py_IncRef` for each one, and at one per id that call was 11% of
/// `encode` on one thread. CPython's own header inlines the increment for stable-ABI builds older than
/// 3.12 (such as this abi3-py310 one), and 3.12+ runs those unchanged. This is the immortality-aware
/// form of the 3.12-3.14 headers, which holds on every version from 3.10: the low 32 bits of
/// `ob_refcnt` are the count, negative as an `i32` on an immortal object (the small ints, from 3.12),
/// whose count must stay as it is. (A mortal object would need 2^31 references to look immortal; the
/// callers add fewer.)
///
/// # Safety
/// `obj` is a live object, the GIL is held, and the build is not free-threaded (abi3 never is).
#[inline(always)]
unsafe fn add_refs(obj: *mut ffi::PyObject, n: u32) {
    #[cfg(all(target_pointer_width = "64", target_endian = "little"))]
    {
        let count = obj.cast::<u32>();
        let c = *count;
        if (c as i32) >= 0 {
            *count = c + n;
        }
    }
    #[cfg(not(all(target_pointer_width = "64", target_endian = "little")))]
    for _ in 0..n {
        ffi::Py_INCREF(obj);
    }
}

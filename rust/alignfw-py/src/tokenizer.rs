//! Bindings of the byte-level BPE tokenizer (issue 3). Registers its classes on `alignfw._native`.

use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}

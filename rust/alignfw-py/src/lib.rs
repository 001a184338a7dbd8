//! `alignfw._native`: thin PyO3 bindings over `alignfw-core`. Every function follows one shape:
//! validate under the GIL, compute without it (`py.detach`), convert back without copying.
//! The public API lives in Python (`alignfw.ops`, `alignfw.tokenizer`); this module is private.

use pyo3::prelude::*;

mod batch;
mod errors;
mod subword;
mod tokenizer;

#[pymodule(gil_used = false)]
mod _native {
    use numpy::{PyArray2, PyReadonlyArray2, PyReadwriteArray2};
    use pyo3::prelude::*;

    use crate::errors::to_pyerr;

    /// `(advantages, returns)`.
    type ArrayPair<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<f32>>);

    #[pymodule_export]
    use crate::errors::{AlignfwError, InvalidInputError, TokenizerError, TokenizerFormatError};

    /// GAE advantages and returns of `(batch, T)` float32 arrays, written into `advantages` and `returns`.
    ///
    /// `mask` marks real steps (non-zero); masked steps get zero advantage and return and are skipped by the
    /// recursion. Runs without the GIL and in parallel over the batch; nothing is copied.
    #[pyfunction]
    #[pyo3(signature = (rewards, values, mask, advantages, returns, *, gamma, lam))]
    #[allow(clippy::too_many_arguments)]
    fn gae_into<'py>(
        py: Python<'py>,
        rewards: PyReadonlyArray2<'py, f32>,
        values: PyReadonlyArray2<'py, f32>,
        mask: Option<PyReadonlyArray2<'py, f32>>,
        mut advantages: PyReadwriteArray2<'py, f32>,
        mut returns: PyReadwriteArray2<'py, f32>,
        gamma: f32,
        lam: f32,
    ) -> PyResult<()> {
        let (r, v) = (rewards.as_array(), values.as_array());
        let m = mask.as_ref().map(|m| m.as_array());
        let (a, o) = (advantages.as_array_mut(), returns.as_array_mut());
        py.detach(|| alignfw_core::gae::gae_into(r, v, m, gamma, lam, a, o))
            .map_err(to_pyerr)
    }

    /// GAE advantages and returns of `(batch, T)` float32 arrays, as new arrays.
    #[pyfunction]
    #[pyo3(signature = (rewards, values, mask=None, *, gamma, lam))]
    fn gae<'py>(
        py: Python<'py>,
        rewards: PyReadonlyArray2<'py, f32>,
        values: PyReadonlyArray2<'py, f32>,
        mask: Option<PyReadonlyArray2<'py, f32>>,
        gamma: f32,
        lam: f32,
    ) -> PyResult<ArrayPair<'py>> {
        use numpy::IntoPyArray;
        let (r, v) = (rewards.as_array(), values.as_array());
        let m = mask.as_ref().map(|m| m.as_array());
        let (adv, ret) = py.detach(|| alignfw_core::gae(r, v, m, gamma, lam)).map_err(to_pyerr)?;
        Ok((adv.into_pyarray(py), ret.into_pyarray(py)))
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        crate::tokenizer::register(m)?;
        crate::subword::register(m)
    }
}

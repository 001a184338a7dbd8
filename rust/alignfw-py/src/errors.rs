//! The Python exception hierarchy of alignfw, rooted at `alignfw.exceptions.AlignfwError`
//! (re-exported there), and the mapping from `alignfw_core::Error`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    alignfw.exceptions,
    AlignfwError,
    PyException,
    "Base class of every alignfw error."
);
create_exception!(
    alignfw.exceptions,
    InvalidInputError,
    AlignfwError,
    "Arguments of the wrong shape, type or value."
);
create_exception!(
    alignfw.exceptions,
    TokenizerError,
    AlignfwError,
    "Encoding or decoding failed (bad id, invalid UTF-8)."
);
create_exception!(
    alignfw.exceptions,
    TokenizerFormatError,
    TokenizerError,
    "A tokenizer file is malformed or unsupported."
);

pub fn to_pyerr(e: alignfw_core::Error) -> PyErr {
    use alignfw_core::Error::*;
    match e {
        InvalidInput(m) => InvalidInputError::new_err(m),
        TokenizerFormat(m) => TokenizerFormatError::new_err(m),
        Tokenize(m) => TokenizerError::new_err(m),
        Io(m) => pyo3::exceptions::PyOSError::new_err(m),
    }
}

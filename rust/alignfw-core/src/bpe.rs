//! Byte-level BPE (issue 3).

"""Type stubs of the private Rust extension ``alignfw._native`` (checked by ``mypy.stubtest``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import final

import numpy as np
import numpy.typing as npt

__all__ = [
    "AlignfwError",
    "BpeTokenizer",
    "InvalidInputError",
    "SubwordTokenizer",
    "TokenizerError",
    "TokenizerFormatError",
    "gae",
    "gae_into",
    "is_byte_level_json",
]

class AlignfwError(Exception): ...
class InvalidInputError(AlignfwError): ...
class TokenizerError(AlignfwError): ...
class TokenizerFormatError(TokenizerError): ...

# --- GAE ---------------------------------------------------------------------------------------

def gae(
    rewards: npt.NDArray[np.float32],
    values: npt.NDArray[np.float32],
    mask: npt.NDArray[np.float32] | None = None,
    *,
    gamma: float,
    lam: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
def gae_into(
    rewards: npt.NDArray[np.float32],
    values: npt.NDArray[np.float32],
    mask: npt.NDArray[np.float32] | None,
    advantages: npt.NDArray[np.float32],
    returns: npt.NDArray[np.float32],
    *,
    gamma: float,
    lam: float,
) -> None: ...

# --- BPE tokenizer -----------------------------------------------------------------------------

@final
class BpeTokenizer:
    """Byte-level BPE tokenizer (private; the public API is ``alignfw.tokenizer.Tokenizer``)."""

    @staticmethod
    def from_json(json: str) -> BpeTokenizer: ...
    @staticmethod
    def from_file(path: str | os.PathLike[str]) -> BpeTokenizer: ...
    @staticmethod
    def from_vocab_merges(
        vocab_path: str | os.PathLike[str],
        merges_path: str | os.PathLike[str],
        pattern: str = "gpt2",
        special_tokens: Sequence[str] = ...,
    ) -> BpeTokenizer: ...
    @staticmethod
    def train(
        files: Sequence[str],
        vocab_size: int,
        min_frequency: int = 0,
        special_tokens: Sequence[str] = ...,
        pattern: str = "gpt2",
    ) -> BpeTokenizer: ...
    @staticmethod
    def train_from_texts(
        texts: Sequence[str],
        vocab_size: int,
        min_frequency: int = 0,
        special_tokens: Sequence[str] = ...,
        pattern: str = "gpt2",
    ) -> BpeTokenizer: ...
    def encode(
        self,
        text: str | bytes,
        allowed_special: str | Iterable[str] | None = None,
        literal: Sequence[tuple[int, int]] | None = None,
    ) -> list[int]: ...
    def encode_with_offsets(
        self, text: str | bytes, allowed_special: str | Iterable[str] | None = None
    ) -> tuple[list[int], list[tuple[int, int]]]: ...
    def encode_batch(
        self,
        texts: Sequence[str | bytes],
        allowed_special: str | Iterable[str] | None = None,
        num_threads: int | None = None,
    ) -> list[list[int]]: ...
    def encode_batch_flat(
        self,
        texts: Sequence[str | bytes],
        allowed_special: str | Iterable[str] | None = None,
        num_threads: int | None = None,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]: ...
    def pre_tokenize(self, text: str | bytes) -> list[str]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...
    def decode_bytes(self, ids: Sequence[int], skip_special_tokens: bool = False) -> bytes: ...
    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]: ...
    def to_json(self) -> str: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def pattern(self) -> str | None: ...
    def token_to_id(self, token: str) -> int | None: ...
    def id_to_token(self, id: int) -> str | None: ...
    def id_to_bytes(self, id: int) -> bytes | None: ...
    def get_vocab(self) -> dict[str, int]: ...
    def added_tokens(self) -> list[tuple[str, int, bool]]: ...
    def byte_vocab(self) -> list[tuple[bytes, int]]: ...

# --- WordPiece / SentencePiece-style BPE / Unigram ------------------------------------------------

def is_byte_level_json(json: str) -> bool: ...
@final
class SubwordTokenizer:
    """WordPiece, SentencePiece-style BPE or Unigram tokenizer (private; use ``alignfw.tokenizer.Tokenizer``)."""

    @staticmethod
    def from_json(json: str) -> SubwordTokenizer: ...
    @staticmethod
    def train_wordpiece(
        texts: Sequence[str],
        vocab_size: int,
        min_frequency: int = 0,
        special_tokens: Sequence[str] = ...,
        limit_alphabet: int | None = None,
        unk_token: str = ...,
        lowercase: bool = True,
    ) -> SubwordTokenizer: ...
    @staticmethod
    def train_unigram(
        texts: Sequence[str],
        vocab_size: int = 8000,
        special_tokens: Sequence[str] = ...,
        unk_token: str = ...,
        n_sub_iterations: int = 2,
        shrinking_factor: float = 0.75,
        max_piece_length: int = 16,
        seed_size: int = 1_000_000,
    ) -> SubwordTokenizer: ...
    def encode(
        self,
        text: str | bytes,
        allowed_special: str | Iterable[str] | None = None,
        add_special_tokens: bool = False,
        literal: Sequence[tuple[int, int]] | None = None,
    ) -> list[int]: ...
    def encode_with_offsets(
        self, text: str | bytes, allowed_special: str | Iterable[str] | None = None, add_special_tokens: bool = False
    ) -> tuple[list[int], list[tuple[int, int]]]: ...
    def encode_batch(
        self,
        texts: Sequence[str | bytes],
        allowed_special: str | Iterable[str] | None = None,
        num_threads: int | None = None,
        add_special_tokens: bool = False,
    ) -> list[list[int]]: ...
    def encode_batch_flat(
        self,
        texts: Sequence[str | bytes],
        allowed_special: str | Iterable[str] | None = None,
        num_threads: int | None = None,
        add_special_tokens: bool = False,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...
    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]: ...
    def to_json(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    def token_to_id(self, token: str) -> int | None: ...
    def id_to_token(self, id: int) -> str | None: ...
    def get_vocab(self) -> dict[str, int]: ...
    def added_tokens(self) -> list[tuple[str, int, bool]]: ...

"""alignfw's tokenizers: byte-level BPE, WordPiece, SentencePiece-style BPE and Unigram, Hugging Face compatible.

Byte-level BPE (Sennrich et al. 2016, https://arxiv.org/abs/1508.07909; Radford et al. 2019, GPT-2)
as Hugging Face ``tokenizers`` implements it: the same ``tokenizer.json`` files in and out, the same
ids, and the same trainer (merge for merge). The work runs in Rust (``alignfw._native.BpeTokenizer``)
without the GIL; batches run in parallel on Rust threads.

Special tokens are safe by default: text that merely spells ``<|endoftext|>`` is encoded as plain
text unless the caller passes ``allowed_special``.

Example::

    from alignfw.tokenizer import Tokenizer

    tok = Tokenizer.train(["corpus.txt"], vocab_size=8192, special_tokens=["<|endoftext|>"])
    ids = tok.encode("Hello world")
    assert tok.decode(ids) == "Hello world"
    tok.save("out/")                       # out/tokenizer.json, loadable by HF tokenizers/transformers
    hf = tok.to_hf(eos_token="<|endoftext|>")

The other subword families load from the same ``tokenizer.json`` files through the same class
(``alignfw._native.SubwordTokenizer``): WordPiece (BERT: ``BertNormalizer``, ``BertPreTokenizer``,
``[CLS]``/``[SEP]`` template), SentencePiece-style BPE (Llama 2, Mistral, Gemma: ``Metaspace`` or
``Prepend`` + ``Replace``, ``<0xNN>`` byte fallback, fused unknowns) and Unigram (Viterbi, unknowns fused).
They encode with the same ids and character offsets as Hugging Face, and decode through the file's
decoder. Unigram files may carry SentencePiece's ``Precompiled`` normalization charsmap (T5, ALBERT).
A file using a component alignfw does not implement raises ``TokenizerFormatError`` naming it.
New WordPiece and Unigram vocabularies are trained with :meth:`Tokenizer.train_wordpiece` (BERT-style)
and :meth:`Tokenizer.train_unigram` (T5-style), as Hugging Face's trainers do.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alignfw._native import BpeTokenizer, SubwordTokenizer, is_byte_level_json
from alignfw.exceptions import TokenizerError, TokenizerFormatError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = ["PATTERNS", "Tokenizer", "load_tokenizer"]

Text = str | bytes
AllowedSpecial = Literal["all"] | Collection[str]
PathLike = str | os.PathLike[str]

#: Pre-tokenizer regexes known by name; each has a hand-written scanner in Rust.
PATTERNS: dict[str, str] = {
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def _files(files: PathLike | Iterable[PathLike]) -> list[str]:
    # A lone path is one file, not an iterable of characters.
    if isinstance(files, (str, os.PathLike)):
        return [os.fspath(files)]
    return [os.fspath(f) for f in files]


def _ids(ids: Sequence[int]) -> list[int]:
    # numpy arrays convert fastest through tolist(); the native call validates the values.
    tolist = getattr(ids, "tolist", None)
    return tolist() if callable(tolist) else list(ids)


def _bad_id_error(batch: Iterable[Sequence[int]]) -> TokenizerError:
    # Only on the error path: find the id that did not fit in u32 to name it.
    bad = next((i for ids in batch for i in _ids(ids) if not 0 <= i < 2**32 - 1), None)
    return TokenizerError(f"id {bad} is not in the vocabulary (ids are non-negative integers)")


def _allowed(allowed_special: AllowedSpecial) -> str | list[str] | None:
    if isinstance(allowed_special, str):
        return allowed_special  # "all"; anything else is rejected in Rust with a clear message
    return list(allowed_special) or None


def _template(spec: str) -> tuple[list[int], list[int]]:
    """Ids a byte-level file's post-processor puts before and after one sequence."""
    import json

    def walk(proc: Any) -> tuple[list[int], list[int]]:
        kind = (proc or {}).get("type")
        if kind in (None, "ByteLevel"):
            return [], []
        if kind == "Sequence":
            parts = [walk(p) for p in proc["processors"]]
            return [i for b, _ in parts for i in b], [i for _, a in parts for i in a]
        if kind in ("BertProcessing", "RobertaProcessing"):
            return [proc["cls"][1]], [proc["sep"][1]]
        if kind == "TemplateProcessing":
            before: list[int] = []
            after: list[int] = []
            side = before
            for item in proc["single"]:
                if "Sequence" in item:
                    side = after
                else:
                    side.extend(proc["special_tokens"][item["SpecialToken"]["id"]]["ids"])
            return before, after
        raise TokenizerFormatError(
            f"unsupported post_processor {kind!r} (supported: ByteLevel, BertProcessing, RobertaProcessing, "
            "TemplateProcessing, Sequence)"
        )

    return walk(json.loads(spec).get("post_processor"))


class Tokenizer:
    """A tokenizer of any supported family: byte-level BPE, WordPiece, SentencePiece-style BPE, Unigram.

    Build one with :meth:`from_file` or :meth:`from_str` (any family), or, for byte-level BPE,
    :meth:`from_vocab_merges`, :meth:`train` or :meth:`train_from_iterator`. Instances are immutable,
    thread-safe and picklable.

    Notation:
        ``n``: number of texts in a batch; ``L_i``: number of ids of text ``i``.
    """

    __slots__ = ("_native", "_template_ids")

    def __init__(self, native: BpeTokenizer | SubwordTokenizer) -> None:
        """Wraps a native tokenizer; prefer the ``from_*`` and ``train*`` constructors."""
        self._native = native
        self._template_ids: tuple[list[int], list[int]] | None = None

    @property
    def family(self) -> str:
        """``"ByteLevelBPE"``, ``"WordPiece"``, ``"BPE"`` (SentencePiece-style) or ``"Unigram"``."""
        native = self._native
        return "ByteLevelBPE" if isinstance(native, BpeTokenizer) else native.family

    def _byte_level(self, what: str) -> BpeTokenizer:
        native = self._native
        if not isinstance(native, BpeTokenizer):
            raise TokenizerError(f"{what} exists for byte-level BPE only; this tokenizer is {native.family}")
        return native

    def _with_template(self, ids: list[int]) -> list[int]:
        # Byte-level files keep their post-processor verbatim; its template ids are added here.
        if self._template_ids is None:
            self._template_ids = _template(self._native.to_json())
        before, after = self._template_ids
        return [*before, *ids, *after]

    # --- construction --------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: PathLike) -> Tokenizer:
        """Loads a tokenizer from disk.

        Args:
            path: A Hugging Face ``tokenizer.json``, or a directory holding either ``tokenizer.json``
                or GPT-2 style ``vocab.json`` + ``merges.txt`` (then the GPT-2 regex is used and
                ``<|endoftext|>``, if in the vocabulary, is special).

        Returns:
            The tokenizer.

        Raises:
            TokenizerFormatError: The file is malformed or uses a component alignfw does not
                implement (the message names it).
            OSError: The file cannot be read.
        """
        p = Path(path)
        if p.is_dir():
            if (p / "tokenizer.json").is_file():
                p = p / "tokenizer.json"
            elif (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
                return cls.from_vocab_merges(p / "vocab.json", p / "merges.txt")
            else:
                raise TokenizerFormatError(f"{p} holds neither tokenizer.json nor vocab.json + merges.txt")
        try:
            text = p.read_bytes().decode("utf-8")
        except OSError as e:
            raise OSError(f"cannot read tokenizer file {p}: {e}") from e
        except UnicodeDecodeError as e:
            raise TokenizerFormatError(f"{p} is not UTF-8 text: {e}") from None
        return cls.from_str(text)

    @classmethod
    def from_str(cls, json: str) -> Tokenizer:
        """Parses the text of a Hugging Face ``tokenizer.json`` of any supported family."""
        if is_byte_level_json(json):
            return cls(BpeTokenizer.from_json(json))
        return cls(SubwordTokenizer.from_json(json))

    @classmethod
    def from_vocab_merges(
        cls,
        vocab: PathLike,
        merges: PathLike,
        *,
        pattern: str = "gpt2",
        special_tokens: Sequence[str] | None = None,
    ) -> Tokenizer:
        """Loads GPT-2 style ``vocab.json`` + ``merges.txt``.

        Args:
            vocab: Path of ``vocab.json`` (``{token: id}``).
            merges: Path of ``merges.txt`` (optional ``#version`` line, then ``a b`` per line).
            pattern: Pre-tokenizer: ``"gpt2"``, ``"llama3"``, ``"qwen2"`` or a regex.
            special_tokens: Tokens to mark special (appended to the vocabulary if absent). Default:
                ``["<|endoftext|>"]`` if the vocabulary has it, else none.
        """
        if special_tokens is None:
            import json

            with open(vocab, encoding="utf-8") as f:
                special_tokens = ["<|endoftext|>"] if "<|endoftext|>" in json.load(f) else []
        return cls(
            BpeTokenizer.from_vocab_merges(
                os.fspath(vocab), os.fspath(merges), PATTERNS.get(pattern, pattern), list(special_tokens)
            )
        )

    @classmethod
    def train(
        cls,
        files: PathLike | Iterable[PathLike],
        vocab_size: int,
        *,
        min_frequency: int = 0,
        special_tokens: Sequence[str] = (),
        pattern: str = "gpt2",
    ) -> Tokenizer:
        """Trains a new vocabulary on UTF-8 text files.

        The algorithm is Hugging Face's ``BpeTrainer`` with the 256 byte-level characters as initial
        alphabet (same settings, same merges); word counting runs in parallel.

        Args:
            files: A text file or several; each line is pre-tokenized on its own.
            vocab_size: Final size, special tokens and the 256 byte tokens included.
            min_frequency: Pairs seen fewer times are never merged (training may stop early).
            special_tokens: Given ids ``0 .. len(special_tokens) - 1``, in order.
            pattern: Pre-tokenizer: ``"gpt2"``, ``"llama3"``, ``"qwen2"`` or a regex.

        Raises:
            InvalidInputError: ``vocab_size`` below ``256 + len(special_tokens)``, a file that is not
                UTF-8, or an invalid regex.
        """
        return cls(
            BpeTokenizer.train(_files(files), vocab_size, min_frequency, list(special_tokens), pattern)
        )

    @classmethod
    def train_from_iterator(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        min_frequency: int = 0,
        special_tokens: Sequence[str] = (),
        pattern: str = "gpt2",
    ) -> Tokenizer:
        """Like :meth:`train`, on texts in memory (each split into lines as files are)."""
        return cls(
            BpeTokenizer.train_from_texts(
                list(texts), vocab_size, min_frequency, list(special_tokens), pattern
            )
        )

    @classmethod
    def train_wordpiece(
        cls,
        files: PathLike | Iterable[PathLike],
        vocab_size: int,
        *,
        min_frequency: int = 0,
        special_tokens: Sequence[str] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
        limit_alphabet: int | None = None,
        unk_token: str = "[UNK]",
        lowercase: bool = True,
    ) -> Tokenizer:
        """Trains a BERT-style WordPiece tokenizer on UTF-8 text files.

        Hugging Face's ``WordPieceTrainer`` (a BPE trainer with the ``##`` prefix) on BERT's normalizer
        and pre-tokenizer; the file has a ``[CLS] $A [SEP]`` template when both tokens are special.
        Hugging Face's trainer breaks ties between equally frequent pairs in hash-map order, so two of
        its runs differ; alignfw's result is deterministic and agrees with HF's up to those ties
        (``tests/tokenizer/test_training.py`` bounds the difference).

        Args:
            files: A text file or several; each line is one sequence.
            vocab_size: Final size, special tokens included.
            min_frequency: Pairs seen fewer times are never merged.
            special_tokens: Given ids ``0 .. len - 1``, in order; must include ``unk_token``.
            limit_alphabet: Keep only this many most frequent characters.
            unk_token: The unknown token.
            lowercase: BERT uncased (lowercase, strip accents) or cased.
        """
        texts = [Path(f).read_text(encoding="utf-8") for f in _files(files)]
        return cls.train_wordpiece_from_iterator(
            texts,
            vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            limit_alphabet=limit_alphabet,
            unk_token=unk_token,
            lowercase=lowercase,
        )

    @classmethod
    def train_wordpiece_from_iterator(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        min_frequency: int = 0,
        special_tokens: Sequence[str] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
        limit_alphabet: int | None = None,
        unk_token: str = "[UNK]",
        lowercase: bool = True,
    ) -> Tokenizer:
        """Like :meth:`train_wordpiece`, on texts in memory (each split into lines)."""
        return cls(
            SubwordTokenizer.train_wordpiece(
                list(texts), vocab_size, min_frequency, list(special_tokens), limit_alphabet, unk_token, lowercase
            )
        )

    @classmethod
    def train_unigram(
        cls,
        files: PathLike | Iterable[PathLike],
        vocab_size: int = 8000,
        *,
        special_tokens: Sequence[str] = ("<unk>",),
        unk_token: str = "<unk>",
        n_sub_iterations: int = 2,
        shrinking_factor: float = 0.75,
        max_piece_length: int = 16,
        seed_size: int = 1_000_000,
    ) -> Tokenizer:
        """Trains a T5-style Unigram (SentencePiece) tokenizer on UTF-8 text files.

        Hugging Face's ``UnigramTrainer`` (seed pieces from frequent substrings, EM rounds, pruning by
        likelihood loss) on a T5-style pipeline: NFKC normalization, ``WhitespaceSplit`` then
        ``Metaspace`` (``"▁"`` before every word), and the ``Metaspace`` decoder. Every character of the
        corpus is kept. Hugging Face's trainer orders tied pieces in hash-map order; alignfw's result is
        deterministic and agrees with HF's up to those ties (``tests/tokenizer/test_training.py``
        bounds the difference).

        Args:
            files: A text file or several; each line is one sequence.
            vocab_size: Final size, special tokens included (the trainer may stop below it).
            special_tokens: Given ids ``0 .. len - 1``, in order.
            unk_token: The unknown token: its id in ``special_tokens``, or id 0 (added before them)
                if it is not one of them.
            n_sub_iterations: EM iterations between two prunings.
            shrinking_factor: Share of the pieces each pruning keeps (at least ``1.1 * vocab_size``).
            max_piece_length: Longest piece, in characters.
            seed_size: Seed pieces (characters and frequent substrings) the EM rounds start from.

        Raises:
            InvalidInputError: A corpus without words, a ``vocab_size`` below its distinct characters
                plus the special tokens, a ``shrinking_factor`` outside ``(0, 1)``, a repeated or empty
                special token.
        """
        texts = [Path(f).read_text(encoding="utf-8") for f in _files(files)]
        return cls.train_unigram_from_iterator(
            texts,
            vocab_size,
            special_tokens=special_tokens,
            unk_token=unk_token,
            n_sub_iterations=n_sub_iterations,
            shrinking_factor=shrinking_factor,
            max_piece_length=max_piece_length,
            seed_size=seed_size,
        )

    @classmethod
    def train_unigram_from_iterator(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        *,
        special_tokens: Sequence[str] = ("<unk>",),
        unk_token: str = "<unk>",
        n_sub_iterations: int = 2,
        shrinking_factor: float = 0.75,
        max_piece_length: int = 16,
        seed_size: int = 1_000_000,
    ) -> Tokenizer:
        """Like :meth:`train_unigram`, on texts in memory (each split into lines)."""
        return cls(
            SubwordTokenizer.train_unigram(
                list(texts),
                vocab_size,
                list(special_tokens),
                unk_token,
                n_sub_iterations,
                shrinking_factor,
                max_piece_length,
                seed_size,
            )
        )

    # --- encoding ------------------------------------------------------------------------------

    def encode(
        self,
        text: Text,
        *,
        allowed_special: AllowedSpecial = (),
        add_special_tokens: bool = False,
        literal: Sequence[tuple[int, int]] = (),
    ) -> list[int]:
        """Encodes one text.

        Args:
            text: ``str``, or ``bytes`` that must be valid UTF-8.
            allowed_special: ``"all"`` or the special tokens whose spelling in ``text`` becomes the
                special id. Others are encoded as plain text. Non-special added tokens are always
                recognised, as in Hugging Face.
            add_special_tokens: Add the post-processor's template tokens (``[CLS] ... [SEP]``,
                ``<s> ...``), as Hugging Face's ``add_special_tokens=True``.
            literal: ``(start, end)`` character spans of ``text`` where no added token is matched
                (e.g. a special-token spelling a chat user typed, while the template's own special
                tokens around it are allowed). An added token whose match overlaps a span is not
                matched there: its text is plain text, encoded together with the text around it,
                exactly as Hugging Face encodes the text when that spelling is not an added token
                at that position. Applies to the tokens matched in the raw text (``normalized =
                false``: every special token of the chat models alignfw knows).

        Returns:
            Ids, shape ``(L,)``. With ``allowed_special="all"`` they equal Hugging Face's
            ``encode(text, add_special_tokens=add_special_tokens).ids`` on the same ``tokenizer.json``.

        Raises:
            TokenizerError: ``text`` is not valid Unicode (invalid UTF-8 bytes, lone surrogates).
            InvalidInputError: An unknown name in ``allowed_special``, or a span of ``literal``
                that is not a character range of ``text``.
        """
        native = self._native
        spans = list(literal) or None
        if isinstance(native, BpeTokenizer):
            ids = native.encode(text, _allowed(allowed_special), spans)
            return self._with_template(ids) if add_special_tokens else ids
        return native.encode(text, _allowed(allowed_special), add_special_tokens, spans)

    def encode_with_offsets(
        self, text: Text, *, allowed_special: AllowedSpecial = (), add_special_tokens: bool = False
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Like :meth:`encode`, with each token's ``(start, end)`` character offsets in ``text``.

        Offsets equal Hugging Face's ``Encoding.offsets``: a token that starts or ends inside a
        character (byte-level and byte-fallback tokens) covers the whole character; template tokens
        get ``(0, 0)``.
        """
        native = self._native
        if isinstance(native, BpeTokenizer):
            ids, offsets = native.encode_with_offsets(text, _allowed(allowed_special))
            if add_special_tokens:
                if self._template_ids is None:
                    self._template_ids = _template(native.to_json())
                before, after = self._template_ids
                ids = [*before, *ids, *after]
                offsets = [(0, 0)] * len(before) + offsets + [(0, 0)] * len(after)
            return ids, offsets
        return native.encode_with_offsets(text, _allowed(allowed_special), add_special_tokens)

    def encode_batch(
        self,
        texts: Sequence[Text],
        *,
        allowed_special: AllowedSpecial = (),
        num_threads: int | None = None,
        add_special_tokens: bool = False,
    ) -> list[list[int]]:
        """Encodes texts in parallel on Rust threads, without the GIL.

        Args:
            texts: ``n`` texts.
            allowed_special: As in :meth:`encode`.
            num_threads: Threads to use; default: one per core.
            add_special_tokens: As in :meth:`encode`.

        Returns:
            ``n`` lists of ids, list ``i`` of shape ``(L_i,)``.
        """
        native = self._native
        if isinstance(native, BpeTokenizer):
            batch = native.encode_batch(texts, _allowed(allowed_special), num_threads)
            return [self._with_template(ids) for ids in batch] if add_special_tokens else batch
        return native.encode_batch(texts, _allowed(allowed_special), num_threads, add_special_tokens)

    def encode_batch_flat(
        self,
        texts: Sequence[Text],
        *,
        allowed_special: AllowedSpecial = (),
        num_threads: int | None = None,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
        """Like :meth:`encode_batch`, returning numpy arrays (no Python object per id).

        Returns:
            ``(ids, offsets)``: ``ids`` of shape ``(sum L_i,)``, ``offsets`` of shape ``(n + 1,)``;
            text ``i``'s ids are ``ids[offsets[i]:offsets[i + 1]]``.
        """
        return self._native.encode_batch_flat(texts, _allowed(allowed_special), num_threads)

    def pre_tokenize(self, text: Text) -> list[str]:
        """The pieces the pre-tokenizer splits ``text`` into, before BPE (for inspection and tests).

        Pieces are plain text (not byte-level spellings); added tokens are not split off.
        Byte-level BPE only.
        """
        return self._byte_level("pre_tokenize").pre_tokenize(text)

    # --- decoding ------------------------------------------------------------------------------

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Decodes ids to text.

        Bytes that do not form valid UTF-8 (a sequence cut inside a character) become U+FFFD, one per
        maximal invalid sequence, exactly as Hugging Face's ``ByteLevel`` decoder does.

        Raises:
            TokenizerError: An id outside the vocabulary.
        """
        try:
            return self._native.decode(_ids(ids), skip_special_tokens)
        except OverflowError:
            raise _bad_id_error([ids]) from None

    def decode_bytes(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> bytes:
        """Decodes ids to the exact bytes they stand for (lossless for partial UTF-8; byte-level BPE only)."""
        native = self._byte_level("decode_bytes")
        try:
            return native.decode_bytes(_ids(ids), skip_special_tokens)
        except OverflowError:
            raise _bad_id_error([ids]) from None

    def decode_batch(self, batch: Sequence[Sequence[int]], *, skip_special_tokens: bool = False) -> list[str]:
        """Decodes many id sequences in parallel."""
        try:
            return self._native.decode_batch([_ids(ids) for ids in batch], skip_special_tokens)
        except OverflowError:
            raise _bad_id_error(batch) from None

    # --- files ---------------------------------------------------------------------------------

    def save(self, path: PathLike) -> Path:
        """Writes a Hugging Face ``tokenizer.json``.

        Args:
            path: File path, or an existing directory (then ``<path>/tokenizer.json``).

        Returns:
            The path written. ``tokenizers.Tokenizer.from_file`` and
            ``transformers.PreTrainedTokenizerFast(tokenizer_file=...)`` load it and encode identically.
        """
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        native = self._native
        if isinstance(native, BpeTokenizer):
            native.save(os.fspath(p))
        else:
            p.write_text(native.to_json(), encoding="utf-8")
        return p

    def to_json(self) -> str:
        """The ``tokenizer.json`` text."""
        return self._native.to_json()

    def to_hf(self, **kwargs: Any) -> PreTrainedTokenizerFast:
        """This tokenizer as a ``transformers.PreTrainedTokenizerFast`` (imports transformers lazily).

        Args:
            **kwargs: Passed on (``eos_token=...``, ``pad_token=...``, ``model_max_length=...``).
        """
        from tokenizers import Tokenizer as HFTokenizer
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(self.to_json()), **kwargs)

    # --- vocabulary ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the id space (largest id + 1), added tokens included."""
        return self._native.vocab_size

    @property
    def pattern(self) -> str | None:
        """The pre-tokenizer regex (byte-level BPE; ``None`` for the other families)."""
        native = self._native
        return native.pattern if isinstance(native, BpeTokenizer) else None

    def token_to_id(self, token: str) -> int | None:
        """Id of a token spelled as in ``tokenizer.json`` (``"Ġthe"``), or ``None``."""
        return self._native.token_to_id(token)

    def id_to_token(self, id: int) -> str | None:
        """Spelling of ``id`` as in ``tokenizer.json``, or ``None``."""
        return self._native.id_to_token(id)

    def id_to_bytes(self, id: int) -> bytes | None:
        """The bytes ``id`` stands for, or ``None`` (byte-level BPE only)."""
        return self._byte_level("id_to_bytes").id_to_bytes(id)

    def get_vocab(self) -> dict[str, int]:
        """``{spelling: id}`` for every token, added tokens included."""
        return self._native.get_vocab()

    @property
    def special_tokens(self) -> dict[str, int]:
        """``{content: id}`` of the special tokens."""
        return {c: i for c, i, special in self._native.added_tokens() if special}

    @property
    def added_tokens(self) -> dict[str, int]:
        """``{content: id}`` of every added token, special or not."""
        return {c: i for c, i, _ in self._native.added_tokens()}

    def special_token_id(self, token: str) -> int:
        """Id of a special token.

        Raises:
            KeyError: ``token`` is not a special token of this tokenizer.
        """
        try:
            return self.special_tokens[token]
        except KeyError:
            raise KeyError(
                f"{token!r} is not a special token (special tokens: {sorted(self.special_tokens)})"
            ) from None

    def mergeable_ranks(self) -> dict[bytes, int]:
        """``{bytes: id}`` of the BPE vocabulary, the form ``tiktoken.Encoding`` takes (byte-level BPE only)."""
        return dict(self._byte_level("mergeable_ranks").byte_vocab())

    # --- Python protocol -----------------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Tokenizer.from_str, (self.to_json(),))

    def __repr__(self) -> str:
        return f"Tokenizer(family={self.family!r}, vocab_size={self.vocab_size}, special_tokens={list(self.special_tokens)})"

    def __len__(self) -> int:
        return self.vocab_size


def load_tokenizer(path: PathLike) -> Tokenizer | PreTrainedTokenizerBase:
    """Loads alignfw's tokenizer when it supports the files, else Hugging Face's.

    Args:
        path: A ``tokenizer.json``, a directory with ``tokenizer.json`` or ``vocab.json`` +
            ``merges.txt``, or anything ``transformers.AutoTokenizer.from_pretrained`` accepts.

    Returns:
        :class:`Tokenizer` for the supported families (byte-level BPE: GPT-2, Llama 3, Qwen2; WordPiece:
        BERT; SentencePiece-style BPE: Llama 2, Mistral, Gemma; Unigram: T5, ALBERT); otherwise a
        ``transformers`` tokenizer.
    """
    p = Path(path)
    try:
        if p.exists():
            return Tokenizer.from_file(p)
    except TokenizerFormatError:
        pass
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.fspath(p.parent if p.is_file() else p))

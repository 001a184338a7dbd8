"""Finding and loading weights: model paths (local, hub id, ``builtin:``), dtypes, and alignfw's
Rust tokenizer for a model's tokenizer (every family alignfw implements: byte-level BPE, WordPiece,
SentencePiece-style BPE, Unigram), checked against Hugging Face's on a probe set before it is used.
Weights load through safetensors only."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from alignfw.exceptions import ConfigError, TokenizerFormatError

__all__ = ["BUILTIN_MODELS", "PARITY_PROBES", "native_tokenizer", "parse_dtype", "resolve_model_path", "save_tokenizer"]

log = logging.getLogger(__name__)

#: ``builtin:<name>`` models shipped inside alignfw (``plugins/models/<name>``)
BUILTIN_MODELS = {"tiny": Path(__file__).resolve().parents[1] / "plugins" / "models" / "tiny"}


def resolve_model_path(path: str, option: str = "model.path") -> str:
    """A local model directory (checked for ``config.json``), a ``builtin:`` model's directory, or a hub id as given.

    ``option``: the config key named in errors.
    """
    if path.startswith("builtin:"):
        name = path.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            raise ConfigError(f"unknown built-in model {path!r}; built-in models: {', '.join('builtin:' + k for k in BUILTIN_MODELS)}")
        return str(BUILTIN_MODELS[name])
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ConfigError(
                f"{option}={path!r} is a directory without config.json; point it at a Hugging Face model directory "
                "(the output of save_pretrained)"
            )
        return str(p)
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(f"{option}={path!r} does not exist; give a local model directory, a hub id, or builtin:tiny")
    return path  # a hub id; from_pretrained reports network problems itself


def parse_dtype(name: str, device: torch.device, option: str = "model.dtype") -> torch.dtype:
    """``auto`` (bf16 on a CUDA device that supports it, else fp32) or a torch dtype's name."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ConfigError(f"{option}={name!r} is not a dtype; use auto, float32, bfloat16 or float16")
    return dt


#: Texts on which alignfw's tokenizer must give Hugging Face's ids before it replaces it: mixed
#: scripts, leading/trailing/repeated spaces, tabs and newlines, digits, emoji, combining marks
#: (each also with the model's special-token spellings, see :func:`_probes`)
PARITY_PROBES = (
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " Hello",
    "  two leading, trailing two  ",
    "multiple    spaces\tand\ttabs\t\t",
    "line\nbreak\n\nblank\r\n crlf \n",
    "\n",
    " ",
    "digits 0 12 345 6789 3.14159 1,000,000",
    "emoji 🤗👍🏽 🇫🇷 ❤️",
    "Привет мир, 你好世界, مرحبا بالعالم, こんにちは, 안녕하세요, नमस्ते",
    "caf\u00e9 cafe\u0301 \u00c5ngstr\u00f6m \u212b",
    "don't I'll WE'RE it's",
    "def f(x):\n    return x ** 2  # code\n",
)


def _probes(specials: list[str]) -> list[str]:
    """:data:`PARITY_PROBES` and probes with the special-token spellings (at the start, inside
    words, between spaces, around newlines)."""
    out = list(PARITY_PROBES)
    for i in range(0, len(specials), 16):  # a few probes however many specials (Llama 3 has 256)
        group = specials[i : i + 16]
        out.append("".join(f"{t}x {t} y{t}\n{t} " for t in group) + "end" + group[0])
    return out


def _parity_difference(native: Any, backend: Any) -> str | None:
    """The first probe (with its setting) on which ``native`` and the Hugging Face ``backend``
    (a ``tokenizers.Tokenizer``) disagree, or None."""
    specials = [str(t.content) for t in backend.get_added_tokens_decoder().values() if t.special]
    probes = _probes(specials)
    # every special spelling as a literal span: what a chat whose user typed them all is encoded with
    spelled = re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True))) if specials else None
    literal = [[m.span() for m in spelled.finditer(p)] if spelled else [] for p in probes]
    split_before = backend.encode_special_tokens
    try:
        for split in (False, True):  # special tokens recognised / their spellings as plain text
            backend.encode_special_tokens = split
            for add in (False, True):
                hf = backend.encode_batch(probes, add_special_tokens=add)
                for probe, spans, ref in zip(probes, literal, hf):
                    ids = native.encode(probe, allowed_special=() if split else "all", add_special_tokens=add)
                    if ids != ref.ids:
                        return f"{probe!r} (special tokens {'as text' if split else 'recognised'}, add_special_tokens={add})"
                    if split and spans and native.encode(probe, allowed_special="all", add_special_tokens=add, literal=spans) != ref.ids:
                        return f"{probe!r} (special tokens as literal spans, add_special_tokens={add})"
    finally:
        backend.encode_special_tokens = split_before
    return None


def native_tokenizer(tokenizer: Any):
    """alignfw's Rust tokenizer equivalent to ``tokenizer``, or None (Hugging Face's is used).

    ``tokenizer``: a live Hugging Face fast tokenizer (built from its ``backend_tokenizer``, i.e.
    after transformers' load-time changes such as Llama's ``legacy`` / ``add_prefix_space``), or a
    local directory holding ``tokenizer.json``. None when the tokenizer has no Rust backend or uses
    a component alignfw does not implement.

    Before it is returned, alignfw's tokenizer must give Hugging Face's ids on a fixed probe set
    (:data:`PARITY_PROBES` and the special-token spellings; with and without ``add_special_tokens``,
    special tokens recognised, as plain text, and allowed but inside ``literal`` spans, as a chat's
    user-typed spellings are encoded; a few milliseconds). On any difference it is not
    used (None) and one warning names the model and the first differing probe.
    """
    from tokenizers import Tokenizer as HfTokenizer

    from alignfw.tokenizer import Tokenizer

    if isinstance(tokenizer, (str, Path)):
        file = Path(tokenizer) / "tokenizer.json"
        if not file.is_file():
            return None
        name = str(tokenizer)
        text = file.read_text(encoding="utf-8")
        backend = None
    else:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:  # a slow (Python) tokenizer
            return None
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        text = backend.to_str()
    try:
        native = Tokenizer.from_str(text)
    except TokenizerFormatError:  # a component alignfw does not implement: Hugging Face's
        return None
    if backend is None:
        try:
            backend = HfTokenizer.from_str(text)
        except Exception:  # noqa: BLE001 - a file Hugging Face cannot load either: nothing to compare with
            return None
    diff = _parity_difference(native, backend)
    if diff is not None:
        log.warning(
            "alignfw's tokenizer for %s differs from Hugging Face's on %s; Hugging Face's tokenizer is used "
            "(correct, slower); please report this", name, diff,
        )
        return None
    return native


def save_tokenizer(tokenizer: Any, path: str | Path) -> None:
    """``tokenizer.save_pretrained(path)``, loadable by every supported transformers version.

    transformers 5 records its ``TokenizersBackend`` class in ``tokenizer_config.json``, a name 4.x
    does not know; ``PreTrainedTokenizerFast`` is the same tokenizer (``tokenizer.json``) under the
    name both know, so a model alignfw saves loads in either.
    """
    tokenizer.save_pretrained(str(path))
    config = Path(path) / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if data.get("tokenizer_class") == "TokenizersBackend":
            data["tokenizer_class"] = "PreTrainedTokenizerFast"
            data.pop("backend", None)
            config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")

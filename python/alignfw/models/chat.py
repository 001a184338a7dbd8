"""Chat templates: render conversational records with the model's template, and encode the result
so that the template's special tokens are special and the users' text never is.

One renderer serves every record kind and the rollout:

- a prompt is rendered with the generation prompt (``add_generation_prompt``), or, when its last
  message is the assistant's, continuing that message (``continue_final_message``), as TRL does;
- a response (``response``, ``chosen``, ``rejected``, each of ``responses``) is what the template
  renders after the prompt: ``render(prompt + response)[len(render(prompt)):]``.

Rendering goes through the tokenizer's own ``apply_chat_template(..., tokenize=False)`` (the same
Jinja environment as Hugging Face), with one change: every special-token spelling inside a message
(``"<|im_start|>"`` typed by a user) is wrapped in private-use marker characters before rendering.
After rendering the markers are removed and their positions kept in :class:`~alignfw.types.ChatText`
(``literal`` spans). Encoding then gives the ids Hugging Face gives when each literal span's
spelling is not an added token at that position (the reference, see ``_encode_chat``); with no
literal span exactly ``tokenizer.apply_chat_template(..., tokenize=True)``'s ids (BOS comes from
the template, once).
alignfw's Rust tokenizer (``CausalLM.fast_tokenizer``, every family it implements: byte-level BPE,
SentencePiece-style BPE, Unigram, WordPiece) encodes a chat in one call, its ``literal`` spans
passed through (``Tokenizer.encode(..., literal=...)``). Without it (a tokenizer alignfw does not
implement, or one that failed ``native_tokenizer``'s parity check), Hugging Face's tokenizer encodes
the stretches between the template's special tokens one by one, as it would place them.
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from typing import Any, Sequence

from alignfw.exceptions import ConfigError, DataError
from alignfw.types import ChatText, Conversation, Message, Record, UnrenderedChat

__all__ = [
    "ROLES",
    "check_messages",
    "encode_texts",
    "plain_text",
    "prompt_prefix",
    "render_conversation",
    "render_records",
    "response_ids",
    "special_tokens",
]

#: the message roles alignfw accepts (what chat templates of current instruct models know)
ROLES = ("system", "developer", "user", "assistant", "tool")
_ROLE_FIXES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant", "chatbot": "assistant"}

# private-use code points around user-typed special-token spellings while the template renders
_START, _END = "\U000f0000", "\U000f0001"
_MARKED = re.compile(f"{_START}(.*?){_END}|[{_START}{_END}]", re.S)


# -- messages -----------------------------------------------------------------------------------


def check_messages(messages: Any, where: str, field: str) -> list[Message]:
    """``messages`` as a list of ``{"role", "content"}`` dicts with known roles and string contents.

    Keys whose value is ``None`` are dropped (Parquet and ``datasets`` fill missing struct fields
    with ``None``). Raises :class:`DataError` naming ``where`` (the row) and ``field`` (the column).
    """
    at = f"{where}: " if where else ""
    if hasattr(messages, "tolist"):
        messages = messages.tolist()
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DataError(f"{at}column {field!r} must be a non-empty list of messages ({{\"role\": ..., \"content\": ...}}), got {_short(messages)}")
    out: list[Message] = []
    for i, m in enumerate(messages, start=1):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{at}message {i} of column {field!r} must be a dict with 'role' and 'content', got {_short(m)}")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            fix = f"use role {_ROLE_FIXES[str(role).lower()]!r}" if str(role).lower() in _ROLE_FIXES else f"use one of {', '.join(ROLES)}"
            raise DataError(f"{at}message {i} of column {field!r} has unknown role {role!r}; {fix}")
        if not isinstance(content, str):
            raise DataError(f"{at}message {i} of column {field!r} ({role}) must have string content, got {type(content).__name__} {_short(content)}")
        out.append({k: v for k, v in m.items() if v is not None})
    return out


def is_messages(value: Any) -> bool:
    """True if ``value`` looks like a conversation: a non-empty list of dicts with a ``role``."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def plain_text(messages: Sequence[Message]) -> str:
    """The contents of ``messages`` joined by blank lines (a conversation's text before rendering)."""
    return "\n\n".join(m["content"] for m in messages)


def _short(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


# -- special tokens -----------------------------------------------------------------------------


def special_tokens(tokenizer: Any) -> list[str]:
    """The spellings of ``tokenizer``'s special tokens (added tokens marked special), longest first."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    names = {str(t) for t in decoder.values() if getattr(t, "special", False)}
    names |= {t for t in getattr(tokenizer, "all_special_tokens", []) if isinstance(t, str)}
    return sorted(names, key=len, reverse=True)


def _special_re(tokenizer: Any) -> re.Pattern | None:
    names = special_tokens(tokenizer)
    return re.compile("|".join(map(re.escape, names))) if names else None


def _mark(value: Any, pattern: re.Pattern | None) -> Any:
    """Wrap every special-token spelling in the strings of ``value`` (messages) in markers."""
    if isinstance(value, str):
        value = value.replace(_START, "").replace(_END, "")  # no forged markers
        return pattern.sub(lambda m: _START + m.group(0) + _END, value) if pattern is not None else value
    if isinstance(value, dict):
        return {k: _mark(v, pattern) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark(v, pattern) for v in value]
    return value


def _unmark(marked: str) -> ChatText:
    """Remove the markers; the spans they enclosed become ``literal`` (lone markers are dropped)."""
    out: list[str] = []
    literal: list[tuple[int, int]] = []
    pos = n = 0
    for m in _MARKED.finditer(marked):
        out.append(marked[pos : m.start()])
        n += m.start() - pos
        if m.group(1) is not None:
            out.append(m.group(1))
            literal.append((n, n + len(m.group(1))))
            n += len(m.group(1))
        pos = m.end()
    out.append(marked[pos:])
    return ChatText("".join(out), literal)


# -- rendering ----------------------------------------------------------------------------------


def _no_template_error(tokenizer: Any, where: str) -> ConfigError:
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return ConfigError(
        f"{where + ' is a conversation' if where else 'conversational data'} (lists of role/content messages), but the "
        f"model's tokenizer ({name}) has no chat template; set model.chat_template=path/to/template.jinja (a Jinja chat "
        "template, e.g. the one of the model's instruct version), or give plain-text rows"
    )


def _render(tokenizer: Any, messages: list[Message], *, prompt: bool, where: str, pattern: re.Pattern | None) -> str:
    """The marked rendering of ``messages``; ``prompt``: add the generation prompt (or continue a
    final assistant message)."""
    if not getattr(tokenizer, "chat_template", None):
        raise _no_template_error(tokenizer, where)
    kwargs: dict[str, Any] = {}
    if prompt:
        last = messages[-1]["role"]
        kwargs = {"add_generation_prompt": last != "assistant", "continue_final_message": last == "assistant"}
    try:
        text = tokenizer.apply_chat_template(_mark(messages, pattern), tokenize=False, **kwargs)
    except Exception as e:  # jinja2's TemplateError, raise_exception() in the template, ValueError
        import jinja2

        at = f"{where}: " if where else ""
        if isinstance(e, jinja2.TemplateSyntaxError):
            raise ConfigError(
                f"the model's chat template does not parse ({e.message} at line {e.lineno}); fix the template given by "
                "model.chat_template (or the tokenizer's chat_template)"
            ) from None
        raise DataError(
            f"{at}the chat template failed to render this conversation ({type(e).__name__}: {e}); fix the row (roles, "
            "their order) or set model.chat_template to a template that accepts it"
        ) from None
    if not isinstance(text, str):  # some versions return a list for batched input
        raise DataError(f"{where}: apply_chat_template returned {type(text).__name__}, expected a string")
    return text


def render_conversation(tokenizer: Any, conv: Conversation) -> dict[str, Any]:
    """The rendered text fields of one conversation: ``prompt`` and whichever of ``response``,
    ``chosen``, ``rejected``, ``responses`` it has, each a :class:`ChatText`.

    Raises:
        ConfigError: The tokenizer has no chat template, or the template does not parse.
        DataError: A message is malformed, the template failed on this conversation, or the prompt's
            rendering is not a prefix of the prompt-and-response rendering (so the response's tokens
            cannot be told apart).
    """
    where = conv.where
    pattern = _special_re(tokenizer)
    prompt_msgs = check_messages(conv.prompt, where, "prompt")
    marked_prompt = _render(tokenizer, prompt_msgs, prompt=True, where=where, pattern=pattern)
    out: dict[str, Any] = {"prompt": _unmark(marked_prompt)}

    def follow(msgs: list[Message], field: str) -> ChatText:
        msgs = check_messages(msgs, where, field)
        full = _render(tokenizer, prompt_msgs + msgs, prompt=False, where=where, pattern=pattern)
        if not full.startswith(marked_prompt):
            raise DataError(
                f"{where + ': ' if where else ''}the chat template renders prompt + {field} so that it does not start with "
                f"the rendered prompt ({_short(_unmark(marked_prompt))} vs {_short(_unmark(full))}), so the {field}'s tokens "
                "cannot be told apart; use a template whose generation prompt is how an assistant turn starts"
            )
        return _unmark(full[len(marked_prompt) :])

    for field in ("response", "chosen", "rejected"):
        msgs = getattr(conv, field)
        if msgs is not None:
            out[field] = follow(msgs, field)
    if conv.responses is not None:
        out["responses"] = [follow(m, f"responses[{i}]") for i, m in enumerate(conv.responses)]
    return out


def render_records(records: Sequence[Record], tokenizer: Any) -> list[Record]:
    """Records with their conversations rendered by ``tokenizer``'s chat template.

    Plain-text records and records already rendered are returned as they are (the same objects), so
    calling this twice, or on plain data, changes nothing.
    """
    out: list[Record] = []
    for rec in records:
        if rec.conversation is None or isinstance(rec.prompt, ChatText):
            out.append(rec)
            continue
        out.append(dataclasses.replace(rec, **render_conversation(tokenizer, rec.conversation)))
    return out


# -- encoding -----------------------------------------------------------------------------------


def _encode_plain(texts: list[str], tokenizer: Any, fast: Any) -> list[list[int]]:
    """Ids of texts with special tokens disallowed (their spellings stay text)."""
    if not texts:
        return []
    if fast is not None:
        return fast.encode_batch(texts)
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


_FALLBACK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fallback_backends(tokenizer: Any) -> tuple[Any, Any] | None:
    """Copies of ``tokenizer``'s Rust backend with special-token spellings as plain text: one for a
    stretch at the start of the text, one for a stretch after a special token (where a ``Metaspace``
    pre-tokenizer with ``prepend_scheme="first"`` adds no prefix). None for a slow tokenizer."""
    try:
        return _FALLBACK[tokenizer]
    except (KeyError, TypeError):
        pass
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    import json

    from tokenizers import Tokenizer as HfTokenizer

    spec = backend.to_str()
    data = json.loads(spec)

    def no_first(node: Any) -> bool:  # prepend_scheme "first" -> "never"; True if any was changed
        if isinstance(node, list):
            return any([no_first(n) for n in node])
        if not isinstance(node, dict):
            return False
        changed = node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first"
        if changed:
            node["prepend_scheme"] = "never"
        return any([changed, *(no_first(v) for v in node.values() if isinstance(v, (list, dict)))])

    first = HfTokenizer.from_str(spec)
    later = HfTokenizer.from_str(json.dumps(data)) if no_first(data.get("pre_tokenizer")) else first
    for b in {id(first): first, id(later): later}.values():
        b.encode_special_tokens = True
    out = (first, later)
    try:
        _FALLBACK[tokenizer] = out
    except TypeError:  # pragma: no cover - a tokenizer that cannot be weakly referenced
        pass
    return out


def _encode_chat_hf(text: ChatText, tokenizer: Any) -> list[int]:
    """:func:`_encode_chat` with Hugging Face's tokenizer (no alignfw tokenizer for this model).

    The text is split at the special-token spellings outside ``text.literal`` (leftmost, longest
    first, as Hugging Face matches added tokens); each stretch between them is encoded with special
    spellings as plain text, as Hugging Face encodes a stretch at that position (a ``Metaspace``
    ``prepend_scheme="first"`` prefix only at the text's start). This equals the reference of
    :func:`_encode_chat` when the special tokens have no ``lstrip`` / ``rstrip`` / ``single_word``
    flag (tests/models/test_chat.py checks it on byte-level, Metaspace and Llama-2-style files).
    """
    pattern = _special_re(tokenizer)
    backends = _fallback_backends(tokenizer)
    ids: list[int] = []
    pos = 0

    def stretch(end: int) -> None:
        if pos < end:
            piece = text[pos:end]
            if backends is None:
                ids.extend(tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            else:
                ids.extend(backends[pos > 0].encode(piece, add_special_tokens=False).ids)

    for m in pattern.finditer(str(text)) if pattern is not None else ():
        if any(a < m.end() and m.start() < b for a, b in text.literal):
            continue  # a spelling the user typed: stays text
        stretch(m.start())
        ids.append(tokenizer.convert_tokens_to_ids(m.group(0)))
        pos = m.end()
    stretch(len(text))
    return ids


def _encode_chat(text: ChatText, tokenizer: Any, fast: Any) -> list[int]:
    """Ids of a rendered chat: the template's special tokens special, the ``literal`` spans not.

    The reference: the ids Hugging Face's tokenizer gives for ``text`` with every special token
    recognised, except that a special-token spelling overlapping a literal span is not an added
    token at that position (it stays plain text and is normalized, pre-tokenized and merged
    together with the text around it, in the same stretch between special tokens). With no
    literal span this is exactly ``apply_chat_template(..., tokenize=True)``. alignfw's tokenizer
    (``fast``) computes it in one call (``literal=``, matched in Rust); Hugging Face's fallback
    (:func:`_encode_chat_hf`) approaches it.
    """
    if fast is not None:
        return fast.encode(str(text), allowed_special="all", literal=text.literal)
    if not text.literal:  # the common case: exactly apply_chat_template(tokenize=True)
        return tokenizer(str(text), add_special_tokens=False)["input_ids"]
    return _encode_chat_hf(text, tokenizer)


def encode_texts(texts: Sequence[str], tokenizer: Any, fast: Any = None) -> list[list[int]]:
    """Token ids of each text, no special tokens added.

    Plain strings: special-token spellings stay text with the alignfw tokenizer (``fast``);
    :class:`ChatText`: the template's special tokens are special, the users' text is not.

    Raises:
        DataError: A conversation that was not rendered (:class:`UnrenderedChat`).
    """
    out: list[list[int] | None] = [None] * len(texts)
    plain = [i for i, t in enumerate(texts) if not isinstance(t, (ChatText, UnrenderedChat))]
    for i, ids in zip(plain, _encode_plain([texts[i] for i in plain], tokenizer, fast)):
        out[i] = ids
    for i, t in enumerate(texts):
        if isinstance(t, UnrenderedChat):
            raise DataError(
                f"{t.where + ': ' if t.where else ''}a conversation reached the model before its chat template was applied; "
                "call alignfw.models.chat.render_records(records, model.tokenizer) first (the pipeline and rollout() do)"
            )
        if isinstance(t, ChatText):
            out[i] = _encode_chat(t, tokenizer, fast)
    return out  # type: ignore[return-value]


_PREFIXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prompt_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before a text when asked to add special tokens (BOS for Llama-,
    Mistral- and Gemma-style tokenizers; nothing for GPT-2 and Qwen2). Plain-text prompts start with
    them; rendered chats do not need them (the template writes BOS)."""
    try:
        return _PREFIXES[tokenizer]
    except (KeyError, TypeError):
        pass
    probe = "x"
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    without = tokenizer(probe, add_special_tokens=False)["input_ids"]
    prefix: list[int] = []
    for start in range(len(with_special) - len(without) + 1):
        if with_special[start : start + len(without)] == without:
            prefix = list(with_special[:start])
            break
    try:
        _PREFIXES[tokenizer] = prefix
    except TypeError:  # pragma: no cover - a tokenizer that cannot be weakly referenced
        pass
    return prefix


def response_ids(ids: list[int], text: str, eos_id: int) -> list[int]:
    """A response's ids as the policy must produce them: up to and including the first EOS.

    A plain response gets EOS appended. A rendered one (:class:`ChatText`) usually holds the turn's
    end already (``<|im_end|>``, ``</s>``): it is cut after the first EOS (a template's newline after
    it is not trained), and EOS is appended only if the template wrote none.
    """
    if isinstance(text, ChatText) and eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    return ids + [eos_id]

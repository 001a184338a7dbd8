"""WordPiece, SentencePiece-style BPE and Unigram equal Hugging Face ``tokenizers`` (issue 14).

Each family is built and trained here with the ``tokenizers`` library on the generated mixed corpus
(no Hub access), in the configurations real models ship: BERT (uncased and cased), Llama 2
(``Prepend`` + ``Replace`` normalizer, no pre-tokenizer), Mistral (``Metaspace`` with
``prepend_scheme="first"``), a split ``Metaspace`` BPE, and T5-style Unigram (with and without byte
fallback). alignfw loads the saved ``tokenizer.json`` and must give the same ids, the same character
offsets and the same decoded text, on the held-out corpus and on arbitrary strings.
"""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path

import pytest
from alignfw.exceptions import TokenizerError
from alignfw.tokenizer import Tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

BYTES = [f"<0x{b:02X}>" for b in range(256)]


def _lines(path: Path, n: int) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[:n]


def bert(train: Path, *, lowercase: bool, strip_accents: bool | None, bert_processing: bool) -> str:
    tok = HFTokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=12))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train([str(train)], trainers.WordPieceTrainer(vocab_size=1500, special_tokens=specials, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if bert_processing:
        tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
    tok.decoder = decoders.WordPiece()
    return tok.to_str()


def _move_byte_tokens_to_model(spec: str) -> str:
    # SentencePiece files keep <0xNN> in the model vocabulary only, not among the added tokens.
    data = json.loads(spec)
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in BYTES]
    return json.dumps(data)


def sp_bpe(train: Path, style: str) -> str:
    tok = HFTokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if style == "llama2-sp-vocab":
        # As SentencePiece trains: on whitespace-split words, so no token has "x\u2581" inside; the file
        # then serves it Llama-2 style (alignfw merges such text word by word: the fast path).
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always", split=True)
    elif style == "llama2":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=style == "metaspace-split")
    specials = ["<unk>", "<s>", "</s>", *BYTES]
    # A small alphabet leaves rare characters to byte fallback.
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials, limit_alphabet=150, show_progress=False)
    tok.train_from_iterator(_lines(train, 1500), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    spec = _move_byte_tokens_to_model(tok.to_str())
    if style == "llama2-sp-vocab":
        data = json.loads(spec)
        data["pre_tokenizer"] = None
        data["normalizer"] = {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "\u2581"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
            ],
        }
        spec = json.dumps(data)
    return spec


def unigram(train: Path, byte_fallback: bool) -> str:
    tok = HFTokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=800, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(_lines(train, 1200), trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.decoder = decoders.Metaspace()
    data = json.loads(tok.to_str())
    if byte_fallback:
        data["model"]["byte_fallback"] = True
        data["model"]["vocab"] += [[b, -100.0] for b in BYTES]
        data["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, data["decoder"]]}
    return json.dumps(data)


def t5_sentencepiece(train: Path) -> str | None:
    """A T5-style file made as transformers converts SentencePiece models: a Unigram trained by
    ``sentencepiece`` itself, its compiled ``nmt_nfkc`` charsmap as a ``Precompiled`` normalizer.
    ``None`` without the ``sentencepiece`` package (and ``protobuf``): those tests are then skipped."""
    try:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:
        return None

    prefix = train.parent / "t5sp"
    spm.SentencePieceTrainer.train(
        input=str(train), model_prefix=str(prefix), vocab_size=900, model_type="unigram",
        normalization_rule_name="nmt_nfkc", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        byte_fallback=False, character_coverage=0.995, minloglevel=2,
    )  # fmt: skip
    model = pb.ModelProto()
    model.ParseFromString(prefix.with_suffix(".model").read_bytes())
    charsmap = base64.b64encode(model.normalizer_spec.precompiled_charsmap).decode()
    specials = [(0, "<pad>"), (1, "</s>"), (2, "<unk>")]
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True}
            for i, c in specials
        ],  # fmt: skip
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Precompiled", "precompiled_charsmap": charsmap},
                {"type": "Strip", "strip_left": False, "strip_right": True},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "\u2581"},
            ],
        },
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}},
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": 2, "vocab": [[p.piece, p.score] for p in model.pieces], "byte_fallback": False},
    }
    assert len(charsmap) > 1000  # a real charsmap (NFKC rules), not an empty one
    return json.dumps(spec)


FAMILIES = {
    "bert-uncased": lambda t: bert(t, lowercase=True, strip_accents=None, bert_processing=False),
    "bert-cased": lambda t: bert(t, lowercase=False, strip_accents=None, bert_processing=True),
    "bert-cased-strip-accents": lambda t: bert(t, lowercase=False, strip_accents=True, bert_processing=False),
    "llama2-bpe": lambda t: sp_bpe(t, "llama2"),
    "llama2-bpe-sp-vocab": lambda t: sp_bpe(t, "llama2-sp-vocab"),
    "mistral-bpe": lambda t: sp_bpe(t, "metaspace-first"),
    "metaspace-split-bpe": lambda t: sp_bpe(t, "metaspace-split"),
    "unigram": lambda t: unigram(t, byte_fallback=False),
    "unigram-byte-fallback": lambda t: unigram(t, byte_fallback=True),
    "t5-unigram-precompiled": t5_sentencepiece,
}


@pytest.fixture(scope="session")
def family_specs(corpus_files) -> dict[str, str | None]:
    train, _ = corpus_files
    return {name: build(train) for name, build in FAMILIES.items()}


def _pair(family_specs, name) -> tuple[Tokenizer, HFTokenizer]:
    spec = family_specs[name]
    if spec is None:
        pytest.skip(f"{name} needs the sentencepiece and protobuf packages")
    return Tokenizer.from_str(spec), HFTokenizer.from_str(spec)


def _check(ours: Tokenizer, hf: HFTokenizer, text: str) -> None:
    for add in (False, True):
        want = hf.encode(text, add_special_tokens=add)
        ids, offsets = ours.encode_with_offsets(text, allowed_special="all", add_special_tokens=add)
        assert ids == want.ids, (add, text)
        assert offsets == [tuple(o) for o in want.offsets], (add, text)
        assert ours.encode(text, allowed_special="all", add_special_tokens=add) == want.ids
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), (skip, text)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_equals_hf_on_the_corpus(family_specs, corpus_files, name):
    ours, hf = _pair(family_specs, name)
    assert ours.family == {"bert": "WordPiece", "unig": "Unigram", "t5-u": "Unigram"}.get(name[:4], "BPE")
    text = corpus_files[1].read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)[:600]
    for line in lines:
        _check(ours, hf, line)
    _check(ours, hf, "".join(lines[:200]))
    want = [e.ids for e in hf.encode_batch(lines, add_special_tokens=True)]
    assert ours.encode_batch(lines, allowed_special="all", add_special_tokens=True, num_threads=2) == want
    # A batch of 2^15 ids or more (and the vocabulary's size): its lists are filled on the threads
    # (the binding's other path).
    times = 1 + max(1 << 15, ours.vocab_size) // sum(map(len, want))
    assert ours.encode_batch(lines * times, allowed_special="all", add_special_tokens=True, num_threads=2) == want * times
    assert ours.decode_batch(want) == hf.decode_batch(want, skip_special_tokens=False)
    # The flat batch (the bindings' shared batch path) holds the same ids, text after text.
    ids, offsets = ours.encode_batch_flat(lines, allowed_special="all", num_threads=2)
    plain = [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)]
    assert offsets.tolist() == [0, *itertools.accumulate(map(len, plain))]
    assert ids.tolist() == [i for x in plain for i in x]


any_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
tricky_text = st.lists(
    st.sampled_from(
        list(" \t\n\u3000\u00a0\u2581aAbZ\u00e9E\u0301\uff21\u2460\u00bd\u2126\ufb01\u3000\u1100\u1161\u0130\u00df\u4e2d\u4e00\U00020000!.,'#-_0123\ufffd\x00\x07\u200b\U0001f600")
        + ["[CLS]", "[SEP]", "<s>", "</s>", "<unk>", "<0x41>", "##", "  "]
    ),
    max_size=30,
).map("".join)


@pytest.mark.parametrize("name", list(FAMILIES))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(any_text, tricky_text))
def test_family_equals_hf_on_arbitrary_strings(family_specs, name, text):
    ours, hf = _pair(family_specs, name)
    _check(ours, hf, text)


def test_special_tokens_need_permission(family_specs):
    ours, hf = _pair(family_specs, "bert-uncased")
    text = "hello [SEP] world"
    plain = ours.encode(text)
    assert ours.token_to_id("[SEP]") not in plain
    assert ours.encode(text, allowed_special=["[SEP]"]) == hf.encode(text, add_special_tokens=False).ids


def test_byte_level_only_methods_say_so(family_specs):
    ours, _ = _pair(family_specs, "unigram")
    with pytest.raises(TokenizerError, match="byte-level BPE only; this tokenizer is Unigram"):
        ours.mergeable_ranks()
    assert ours.pattern is None


def test_saved_family_round_trips(family_specs, tmp_path):
    ours, hf = _pair(family_specs, "llama2-bpe")
    path = ours.save(tmp_path)
    again = Tokenizer.from_file(path)
    text = "Hello wörld 😀 \u4e2d"
    assert again.encode(text, add_special_tokens=True) == hf.encode(text).ids
    assert again.family == "BPE"
    import pickle

    assert pickle.loads(pickle.dumps(again)).encode(text) == again.encode(text)

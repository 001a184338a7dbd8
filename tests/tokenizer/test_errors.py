"""Bad input raises alignfw's own exceptions with clear messages (issue 3, "Bad input")."""

from __future__ import annotations

import json

import pytest
from alignfw.exceptions import AlignfwError, InvalidInputError, TokenizerError, TokenizerFormatError
from alignfw.tokenizer import Tokenizer


def test_invalid_utf8_bytes(trained):
    with pytest.raises(TokenizerError, match="not valid UTF-8.*offset 2"):
        trained["gpt2"].encode(b"ab\xff")
    with pytest.raises(TokenizerError, match="not valid UTF-8"):
        trained["gpt2"].encode_batch(["fine", b"\xc3("])


def test_lone_surrogate(trained):
    with pytest.raises(TokenizerError, match="lone surrogate"):
        trained["gpt2"].encode("a\ud800b")


def test_id_outside_vocabulary(trained):
    tok = trained["gpt2"]
    with pytest.raises(TokenizerError, match=f"id {tok.vocab_size} is not in the vocabulary"):
        tok.decode([1, tok.vocab_size])
    with pytest.raises(TokenizerError):
        tok.decode_batch([[1], [10**9]])
    for bad in (-1, 2**40):
        with pytest.raises(TokenizerError, match=f"id {bad} is not in the vocabulary"):
            tok.decode([bad])
        with pytest.raises(TokenizerError):
            tok.decode_bytes([bad])
        with pytest.raises(TokenizerError, match=f"id {bad} "):
            tok.decode_batch([[1], [2, bad]])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"model": {"type": "WordLevel", "vocab": {}}}', 'unsupported model type "WordLevel"'),
        ('{"model": {"type": "WordPiece", "vocab": {}}}', 'WordPiece model has no string field "unk_token"'),
        (
            '{"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "CharDelimiterSplit"}}',
            'unsupported pre_tokenizer "CharDelimiterSplit".*supported: BertPreTokenizer',
        ),
        (
            '{"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"},'
            ' "normalizer": {"type": "NFKC"}}',
            'unsupported normalizer type "NFKC" \\(supported: none, NFC\\)',
        ),
        (
            '{"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]},'
            ' "normalizer": {"type": "Precompiled", "precompiled_charsmap": "AA=="}}',
            "Precompiled normalizer: cannot read its charsmap",
        ),
        (
            '{"model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]},'
            ' "normalizer": {"type": "ByteLevel"}}',
            'unsupported normalizer "ByteLevel"',
        ),
        (
            '{"model": {"type": "BPE", "vocab": {}, "merges": [], "byte_fallback": true},'
            ' "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}}',
            "byte_fallback",
        ),
        (
            (
                '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]},'
                ' "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}}'
            ),
            "not in the vocabulary",
        ),
        ('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}', "not in the vocabulary"),
        ('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}}', "dropout"),
        (
            '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "post_processor": {"type": "Other"}}',
            'unsupported post_processor "Other"',
        ),
    ],
)
def test_malformed_or_unsupported_tokenizer_json(text, match):
    with pytest.raises(TokenizerFormatError, match=match):
        Tokenizer.from_str(text)


def test_unknown_split_behavior(trained):
    data = json.loads(trained["llama3"].to_json())
    data["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithPrevious"
    with pytest.raises(TokenizerFormatError, match='Split behavior "MergedWithPrevious"'):
        Tokenizer.from_str(json.dumps(data))


def test_bad_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text("[]", encoding="utf-8")
    with pytest.raises(TokenizerFormatError, match="JSON object"):
        Tokenizer.from_file(tmp_path)
    with pytest.raises(TokenizerFormatError, match="neither tokenizer.json"):
        Tokenizer.from_file(tmp_path / "..")
    with pytest.raises(OSError, match="cannot read"):
        Tokenizer.from_file(tmp_path / "missing.json")


def test_bad_arguments(trained, tmp_path):
    tok = trained["gpt2"]
    with pytest.raises(InvalidInputError, match="not a special token"):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(InvalidInputError, match='"all"'):
        tok.encode("x", allowed_special="everything")
    with pytest.raises(InvalidInputError, match="str or UTF-8 bytes"):
        tok.encode(123)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="not a single text"):
        tok.encode_batch("abc")
    with pytest.raises(InvalidInputError, match="num_threads"):
        tok.encode_batch(["a"], num_threads=0)
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"hello \xff world")
    with pytest.raises(InvalidInputError, match="not valid UTF-8"):
        Tokenizer.train([corpus], 300)
    corpus.write_text("hello world", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="too small"):
        Tokenizer.train([corpus], 100)
    with pytest.raises(InvalidInputError, match="invalid pre-tokenizer regex"):
        Tokenizer.train([corpus], 300, pattern="(unclosed")


def test_everything_is_an_alignfw_error():
    for exc in (InvalidInputError, TokenizerError, TokenizerFormatError):
        assert issubclass(exc, AlignfwError)

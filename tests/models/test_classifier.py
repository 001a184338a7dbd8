"""Reward models read ``prompt + response`` with alignfw's Rust tokenizer exactly as with Hugging
Face's call: the same input ids, masks and token type ids, for byte-level BPE (GPT-2, Qwen2),
WordPiece (BERT, with its [CLS]/[SEP] template) and SentencePiece-style BPE (Llama-style BOS),
with left truncation that keeps the template tokens and right padding."""

from __future__ import annotations

import copy

import pytest
import torch
from chat_models import corpus, hf_tokenizer

from alignfw.models import ClassifierTokenizer, score_sequences

TEXTS = [
    "the sky is blue",
    "why are you a helpful assistant? tell me about cats and dogs, 12 345 birds sleep slowly",
    "",
    "hello <|endoftext|> [SEP] </s> <|im_end|> it's I'm don't",  # special spellings are read as the specials
    "one two three " * 40,  # longer than every max_length below: loses its beginning
    "Ünïcödé ✓ 🙂 ok\n\n  spaces   and\ttabs",
]


def _gpt2():
    from transformers import AutoTokenizer

    from alignfw.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("builtin:tiny"))


def _bert():
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import BertTokenizerFast

    from alignfw.tokenizer import Tokenizer

    wp = Tokenizer.train_wordpiece_from_iterator(corpus(), vocab_size=300)
    raw = HFTokenizer.from_str(wp.to_json())
    return BertTokenizerFast(tokenizer_object=raw, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")


TOKENIZERS = {
    "gpt2": _gpt2,
    "qwen2": lambda: hf_tokenizer("qwen2"),
    "llama3": lambda: hf_tokenizer("llama3"),
    "bert": _bert,
    "sentencepiece": lambda: hf_tokenizer("mistral"),  # Metaspace BPE, byte fallback, "<s> $A" template
}
FAMILIES = {"gpt2": "ByteLevelBPE", "qwen2": "ByteLevelBPE", "llama3": "ByteLevelBPE", "bert": "WordPiece", "sentencepiece": "BPE"}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def pair(request) -> tuple[str, ClassifierTokenizer, ClassifierTokenizer]:
    hf = TOKENIZERS[request.param]()
    fast = ClassifierTokenizer.of(copy.deepcopy(hf))
    slow = ClassifierTokenizer.of(copy.deepcopy(hf), native=False)
    return request.param, fast, slow


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].shape == b[key].shape, key
        # the lowest transformers allowed builds the tensors of an all-empty batch as float32; ours stay int64
        assert a[key].dtype == b[key].dtype or a[key].numel() == 0, key
        assert torch.equal(a[key], b[key].to(a[key].dtype)), (key, a[key], b[key])


@pytest.mark.parametrize("max_length", [1, 2, 3, 8, 24, 1024])
def test_rust_tokenizer_gives_hugging_faces_tensors(pair, max_length):
    name, fast, slow = pair
    assert fast.fast is not None and fast.fast.family == FAMILIES[name] and slow.fast is None
    _assert_same(fast.encode(TEXTS, max_length=max_length), slow.encode(TEXTS, max_length=max_length))
    for text in TEXTS:  # one at a time: no padding at all
        _assert_same(fast.encode([text], max_length=max_length), slow.encode([text], max_length=max_length))


def test_truncation_keeps_the_end_and_the_template(pair):
    name, fast, _ = pair
    full = fast.encode([TEXTS[4]], max_length=10_000)["input_ids"][0].tolist()
    cut = fast.encode([TEXTS[4]], max_length=12)["input_ids"][0].tolist()
    assert len(cut) == 12 and len(full) > 12
    n_before = {"bert": 1, "sentencepiece": 1, "llama3": 1}.get(name, 0)  # [CLS], <s>, <|begin_of_text|>
    n_after = {"bert": 1}.get(name, 0)
    assert cut[:n_before] == full[:n_before] and cut[len(cut) - n_after :] == full[len(full) - n_after :]
    assert cut[n_before : len(cut) - n_after] == full[len(full) - 12 + n_before : len(full) - n_after]


def test_bert_template_and_token_types():
    tok = ClassifierTokenizer.of(_bert())
    enc = tok.encode(["the sky", "the sky is blue"], max_length=64)
    cls, sep, pad = tok.hf.cls_token_id, tok.hf.sep_token_id, tok.hf.pad_token_id
    assert enc["input_ids"][0, 0] == cls and enc["input_ids"][1, 0] == cls
    for row, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist()):
        n = sum(mask)
        assert row[0] == cls and row[n - 1] == sep and row[n:] == [pad] * (len(row) - n)
    assert enc["attention_mask"][0].sum() < enc["attention_mask"][1].sum()
    assert "token_type_ids" in enc and not enc["token_type_ids"].any()


def test_special_spellings_are_read_as_special_tokens():
    tok = ClassifierTokenizer.of(_gpt2())
    eos = tok.hf.convert_tokens_to_ids("<|endoftext|>")
    assert tok.encode(["a<|endoftext|>b"], max_length=8)["input_ids"][0].tolist().count(eos) == 1


def test_empty_batch():
    tok = ClassifierTokenizer.of(_gpt2())
    enc = tok.encode([], max_length=8)
    assert enc["input_ids"].shape == (0, 0) and enc["attention_mask"].shape == (0, 0)


def test_scores_are_the_same_with_either_tokenizer():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    hf = _gpt2()
    fast, slow = ClassifierTokenizer.of(copy.deepcopy(hf)), ClassifierTokenizer.of(copy.deepcopy(hf), native=False)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(hf), n_positions=64, n_embd=32, n_layer=1, n_head=2, num_labels=1, pad_token_id=fast.hf.pad_token_id)
    model = GPT2ForSequenceClassification(cfg).eval()
    prompts, responses = ["translate: cat =", "translate: big dog =" * 10, ""], [" nyan", " mago vauv", "x"]
    with torch.no_grad():
        a = score_sequences(model, fast, prompts, responses, max_length=32)
        b = score_sequences(model, slow, prompts, responses, max_length=32)
    assert torch.equal(a, b) and a.shape == (3,) and a.dtype == torch.float32

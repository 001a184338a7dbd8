"""Tiny chat models of three template families, made here (no hub): a tokenizer trained with the
``tokenizers`` library on a small generated corpus, a random LlamaConfig / Qwen2Config /
MistralConfig model, and a chat template written for these tests in the structure of the family's
real template (Llama 3 headers, Qwen2 ChatML, Mistral [INST], plus a Gemma-style turn template for
the SentencePiece-style tokenizer); ``llama2``: a Llama-2-style (``Prepend`` + ``Replace``
normalizer, legacy) tokenizer with the [INST] template.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

QWEN2_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

MISTRAL_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported!') }}"
    "{%- endif %}"
    "{%- endfor %}"
)

GEMMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

_WORDS = (
    "the sky is blue green red what color why how many cats dogs birds sleep eat run fast slowly "
    "answer question please tell me about you are a helpful assistant system user hello hi thanks "
    "one two three 12 345 it's I'm don't yes no maybe , . ? ! : ( )"
).split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 12))]
        lines.append(" ".join(words) + rng.choice(["", "\n", "\n\n", " "]))
    return lines


def _byte_level(pattern: str, specials: list[str], bos: str | None):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if bos is not None:  # Llama 3's tokenizer puts BOS before every text it encodes with special tokens
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _sentencepiece_style(specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    alphabet = sorted(set("".join(corpus()) + string.ascii_letters + string.digits + string.punctuation + "\n\u2581"))
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def _llama2_style(specials: list[str]):
    """Llama 2's layout (transformers' ``legacy`` files): a ``Prepend("▁")`` + ``Replace`` normalizer
    and no pre-tokenizer, so every stretch between special tokens gets the prefix."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    alphabet = sorted(set("".join(corpus()) + string.ascii_letters + string.digits + string.punctuation + "\n\u2581"))
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


#: family -> (tokenizer builder, special tokens, bos, eos, pad, template, config class)
FAMILIES = {
    "llama3": dict(
        pattern=LLAMA3_PATTERN,
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"],
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", template=LLAMA3_TEMPLATE, config="LlamaConfig",
    ),
    "qwen2": dict(
        pattern=QWEN2_PATTERN,
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", template=QWEN2_TEMPLATE, config="Qwen2Config",
    ),
    "mistral": dict(
        pattern=None,
        specials=["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<start_of_turn>", "<end_of_turn>"],
        bos="<s>", eos="</s>", pad="<unk>", template=MISTRAL_TEMPLATE, config="MistralConfig",
    ),
    "llama2": dict(  # Llama 2's [INST] format is Mistral's; its only special tokens are <unk>, <s>, </s>
        pattern=None, builder=_llama2_style,
        specials=["<unk>", "<s>", "</s>"],
        bos="<s>", eos="</s>", pad="<unk>", template=MISTRAL_TEMPLATE, config="LlamaConfig",
    ),
}


def hf_tokenizer(family: str, template: str | None = "default"):
    """A ``PreTrainedTokenizerFast`` of ``family`` with its chat template (``None``: no template)."""
    from transformers import PreTrainedTokenizerFast

    f = FAMILIES[family]
    if f["pattern"]:
        raw = _byte_level(f["pattern"], f["specials"], f["bos"])
    else:
        raw = f.get("builder", _sentencepiece_style)(f["specials"])
    kwargs = {"bos_token": f["bos"]} if f["bos"] else {}
    if family in ("mistral", "llama2"):
        kwargs["unk_token"] = "<unk>"
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=f["eos"], pad_token=f["pad"], **kwargs)
    if template is not None:
        tok.chat_template = f["template"] if template == "default" else template
    return tok


def save_model(family: str, path: Path, *, template: str | None = "default") -> Path:
    """A tiny random model of ``family`` with its tokenizer, saved with ``save_pretrained``."""
    import torch
    import transformers

    tok = hf_tokenizer(family, template)
    cfg_cls = getattr(transformers, FAMILIES[family]["config"])
    cfg = cfg_cls(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path

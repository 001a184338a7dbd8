"""Models: the contract a model plugin fulfils (:class:`PolicyModel`), the Hugging Face causal LM
that implements it (:class:`CausalLM`), scoring (fused log-probs from hidden states), loading
(paths, dtypes, safetensors only) and one-output sequence classifiers (reward models).

    protocol.py    PolicyModel, Generation           the contract
    causal_lm.py   CausalLM                          the Hugging Face implementation
    scoring.py     score_tokens, PolicyModule, ...   log-probs / values / entropy of given tokens
    loading.py     resolve_model_path, parse_dtype   finding weights
    classifier.py  score_sequences, ...              reward models (one-output classifiers)
    chat.py        render_records, encode_texts      chat templates: conversations to text and ids
    adapters.py    LoraOptions, AdapterFreeReference LoRA through peft (model.lora.*)
    sampling.py    SeededSampler, mix                each row samples from its own seeded stream
"""

from alignfw.models.causal_lm import CausalLM
from alignfw.models.classifier import ClassifierTokenizer, checkpointing, classifier_from_policy, enable_checkpointing, load_classifier, score_sequences
from alignfw.models.loading import BUILTIN_MODELS, native_tokenizer, parse_dtype, resolve_model_path, save_tokenizer
from alignfw.models.protocol import Generation, PolicyModel
from alignfw.models.scoring import (
    PolicyModule,
    disable_dropout,
    forward_hidden,
    position_ids_from_mask,
    response_logprobs,
    score_tokens,
)

__all__ = [
    "BUILTIN_MODELS",
    "CausalLM",
    "Generation",
    "PolicyModel",
    "PolicyModule",
    "checkpointing",
    "ClassifierTokenizer",
    "classifier_from_policy",
    "enable_checkpointing",
    "disable_dropout",
    "forward_hidden",
    "load_classifier",
    "native_tokenizer",
    "parse_dtype",
    "position_ids_from_mask",
    "resolve_model_path",
    "response_logprobs",
    "save_tokenizer",
    "score_sequences",
]

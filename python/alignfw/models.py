"""The model component: a Hugging Face causal LM, its tokenizer, an optional value head and a
frozen reference copy, with the few operations algorithms need (generate, score, save).

Log-probabilities are computed from the last hidden states and the LM-head weight through
``alignfw.ops.logprobs`` (fused Triton kernel on CUDA, a chunked torch reference elsewhere), so the
full ``(B, T, V)`` fp32 logits are never materialised. Models whose head is not a plain linear
layer on the last hidden state (final-logit soft-capping, logit scaling) fall back to the model's
own logits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alignfw.ops.logprobs import logprobs_from_hidden, logprobs_from_logits

__all__ = ["CausalLM", "Generation", "disable_dropout", "position_ids_from_mask"]


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0 (PPO's policy, reference and value passes must agree)."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    cfg = getattr(module, "config", None)
    for key in ("attn_pdrop", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_dropout", "dropout"):
        if cfg is not None and isinstance(getattr(cfg, key, None), float):
            setattr(cfg, key, 0.0)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` uses them. Shape ``(b, T)``."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class Generation:
    """Sampled continuations of a batch of prompts.

    Shapes: ``sequences`` and ``attention_mask`` ``(b, P + R)`` (prompts left-padded to ``P``),
    ``response_mask`` ``(b, R)``: 1 for response tokens up to and including the first EOS.
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_len: int
    responses: list[str]

    @property
    def response_ids(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_len :]

    def select(self, idx: torch.Tensor) -> Generation:
        """The rows ``idx`` (a minibatch); texts are not carried over."""
        return Generation(self.sequences[idx], self.attention_mask[idx], self.response_mask[idx], self.prompt_len, [])


class CausalLM:
    """A policy: ``lm`` (``transformers`` causal LM), ``tokenizer``, optional ``value_head``, optional ``ref``."""

    def __init__(self, lm: Any, tokenizer: Any, device: torch.device | str = "cpu", fast_tokenizer: Any = None) -> None:
        """``fast_tokenizer``: an :class:`alignfw.tokenizer.Tokenizer` with the same vocabulary, used
        for the encode/decode calls of rollouts (Rust, GIL released, parallel over the batch); the
        Hugging Face ``tokenizer`` remains for saving and for everything else."""
        self.device = torch.device(device)
        self.lm = lm.to(self.device)
        self.tokenizer = tokenizer
        self.fast_tokenizer = fast_tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.value_head: nn.Linear | None = None
        self.ref: Any = None
        self._fused_head = self._has_plain_head()

    # -- construction -------------------------------------------------------------------------

    def _has_plain_head(self) -> bool:
        cfg = self.lm.config
        head = self.lm.get_output_embeddings()
        return (
            isinstance(head, nn.Linear)
            and getattr(cfg, "final_logit_softcapping", None) is None
            and getattr(cfg, "logit_scale", None) in (None, 1.0)
        )

    def add_value_head(self) -> nn.Linear:
        """A scalar value head on the last hidden state (shared trunk, as in TRL's ``...WithValueHead``)."""
        if self.value_head is None:
            hidden = self.lm.config.get_text_config().hidden_size
            head = nn.Linear(hidden, 1)
            nn.init.normal_(head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(head.bias)
            self.value_head = head.to(self.device, dtype=next(self.lm.parameters()).dtype)
        return self.value_head

    def make_reference(self) -> Any:
        """A frozen copy of the current policy, kept on the same device."""
        if self.ref is None:
            self.ref = copy.deepcopy(self.lm).eval()
            self.ref.requires_grad_(False)
        return self.ref

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.lm.parameters() if p.requires_grad]
        if self.value_head is not None:
            params += list(self.value_head.parameters())
        return params

    # -- data ---------------------------------------------------------------------------------

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added (special-token spellings in the text
        stay plain text with the alignfw tokenizer)."""
        if self.fast_tokenizer is not None:
            return self.fast_tokenizer.encode_batch(texts)
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def decode_texts(self, ids: list[list[int]]) -> list[str]:
        """Text of each id list, special tokens dropped."""
        if self.fast_tokenizer is not None:
            return self.fast_tokenizer.decode_batch(ids, skip_special_tokens=True)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask, both ``(b, P)``."""
        ids = self.encode_texts(prompts)
        P = max((len(x) for x in ids), default=0)
        out = torch.full((len(ids), P), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), P), dtype=torch.long)
        for i, x in enumerate(ids):
            if x:
                out[i, P - len(x) :] = torch.tensor(x, dtype=torch.long)
                mask[i, P - len(x) :] = 1
        return out.to(self.device), mask.to(self.device)

    def encode_pairs(self, prompts: list[str], responses: list[str]) -> Generation:
        """Given (prompt, response) pairs as a :class:`Generation`, for :meth:`score` (SFT, DPO, ranking).

        Prompt and response are tokenised separately, so the response's tokens are exactly those
        that get a log-prob (no merge across the boundary), without special tokens; EOS follows
        each response, because the policy must learn to stop. Prompts are left-padded to ``P`` and
        responses right-padded to ``R``; ``response_mask`` marks the response tokens including EOS.

        Shapes: ``sequences``, ``attention_mask`` ``(b, P + R)``; ``response_mask`` ``(b, R)``.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"encode_pairs: {len(prompts)} prompts but {len(responses)} responses")
        tok = self.tokenizer
        if tok.eos_token_id is None:
            raise ValueError("encode_pairs needs a tokenizer with an EOS token")
        p_ids, p_mask = self.encode_prompts(prompts)  # (b, P), left-padded
        if p_ids.shape[1] == 0:
            raise ValueError("encode_pairs needs non-empty prompts (the first response token is predicted from the prompt)")
        resp = [ids + [tok.eos_token_id] for ids in self.encode_texts(responses)]
        R = max(len(r) for r in resp)
        r_ids = torch.full((len(resp), R), tok.pad_token_id, dtype=torch.long)
        r_mask = torch.zeros((len(resp), R), dtype=torch.long)
        for i, r in enumerate(resp):
            r_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            r_mask[i, : len(r)] = 1
        r_ids, r_mask = r_ids.to(self.device), r_mask.to(self.device)
        sequences = torch.cat([p_ids, r_ids], dim=1)  # (b, P + R)
        attention_mask = torch.cat([p_mask, r_mask], dim=1)
        return Generation(sequences, attention_mask, r_mask, p_ids.shape[1], list(responses))

    @torch.no_grad()
    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Generation:
        """Sample one continuation per prompt with the policy in eval mode."""
        ids, mask = self.encode_prompts(prompts)
        was_training = self.lm.training
        self.lm.eval()
        tok = self.tokenizer
        sample = temperature > 0
        out = self.lm.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_k=top_k if sample else None,
            top_p=top_p if sample else None,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        self.lm.train(was_training)
        P = ids.shape[1]
        resp = out[:, P:]  # (b, R)
        is_eos = resp == tok.eos_token_id
        # keep tokens up to and including the first EOS
        after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        response_mask = (~after_eos).long()
        attention_mask = torch.cat([mask, response_mask], dim=1)
        lengths = response_mask.sum(1).tolist()
        texts = self.decode_texts([row[:n] for row, n in zip(resp.tolist(), lengths)])
        return Generation(out, attention_mask, response_mask, P, texts)

    # -- scoring ------------------------------------------------------------------------------

    def forward_hidden(self, lm: Any, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``(b, T, H)``."""
        out = lm.base_model(
            input_ids=sequences,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def score(
        self, gen: Generation, *, temperature: float = 1.0, lm: Any = None, values: bool = False, entropy: bool = False
    ) -> dict[str, torch.Tensor]:
        """Per-token log-probs of the response tokens under ``lm`` (default: the policy).

        Returns ``logprobs`` ``(b, R)`` (0 where the response is masked), and ``values`` ``(b, R)``
        (value of the state *before* each response token) and ``entropy`` ``(b, R)`` when asked.
        Gradients flow when called outside ``torch.no_grad``.
        """
        lm = self.lm if lm is None else lm
        P = gen.prompt_len
        hidden = self.forward_hidden(lm, gen.sequences, gen.attention_mask)  # (b, T, H)
        h = hidden[:, P - 1 : -1]  # states that predict the response tokens, (b, R, H)
        targets = gen.response_ids.masked_fill(~gen.response_mask.bool(), -100)  # (b, R)
        if self._fused_head:
            head = lm.get_output_embeddings()
            res = logprobs_from_hidden(h, head.weight, targets, bias=head.bias, temperature=temperature, return_entropy=entropy)
        else:
            logits = lm.get_output_embeddings()(h)
            res = logprobs_from_logits(logits, targets, temperature=temperature, return_entropy=entropy)
        out: dict[str, torch.Tensor] = {}
        if entropy:
            out["logprobs"], out["entropy"] = res
        else:
            out["logprobs"] = res
        if values:
            if self.value_head is None:
                raise RuntimeError("score(values=True) needs add_value_head() first")
            out["values"] = self.value_head(h).squeeze(-1).float() * gen.response_mask
        return out

    # -- saving -------------------------------------------------------------------------------

    def save_pretrained(self, path: str) -> None:
        """Hugging Face format (safetensors) that loads back in plain ``transformers``."""
        self.lm.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

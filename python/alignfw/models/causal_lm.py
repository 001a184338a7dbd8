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

__all__ = ["CausalLM", "Generation", "PolicyModule", "disable_dropout", "position_ids_from_mask", "score_tokens"]


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
        self._policy_module: nn.Module | None = None
        self._wrapped: str | None = None  #: the strategy after parallelize(), None in one process
        #: set by the pipeline under torchrun: trainable_parameters() then wraps the policy
        self.parallel_strategy: str | None = None

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
            self._check_not_wrapped("add_value_head")
            hidden = self.lm.config.get_text_config().hidden_size
            head = nn.Linear(hidden, 1)
            nn.init.normal_(head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(head.bias)
            self.value_head = head.to(self.device, dtype=next(self.lm.parameters()).dtype)
        return self.value_head

    def make_reference(self) -> Any:
        """A frozen copy of the current policy, kept on the same device."""
        if self.ref is None:
            self._check_not_wrapped("make_reference")
            self.ref = copy.deepcopy(self.lm).eval()
            self.ref.requires_grad_(False)
        return self.ref

    def _check_not_wrapped(self, what: str) -> None:
        if self._wrapped:
            raise RuntimeError(f"CausalLM.{what}() after parallelize(): call it in the algorithm's __init__ before the optimizer is built")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The policy's trainable parameters (and the value head's).

        Under torchrun the first call wraps the policy for ``parallel_strategy`` (set by the
        pipeline) via :meth:`parallelize`, so that an algorithm's optimizer, built from this list,
        holds the parameters the wrapper trains (FSDP2 replaces them by shards).
        """
        if self.parallel_strategy is not None and not self._wrapped:
            self.parallelize(self.parallel_strategy)
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
        kwargs = dict(
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
        if self.fsdp:
            # through the FSDP2 root's forward (it gathers the root's shards); synced_gpus keeps every
            # rank stepping until all are done, so the per-forward all-gathers stay matched
            out = self._policy_module(generate=dict(kwargs, synced_gpus=True))
        else:
            out = self.lm.generate(**kwargs)
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
        return forward_hidden(lm, sequences, attention_mask)

    def score(
        self, gen: Generation, *, temperature: float = 1.0, lm: Any = None, values: bool = False, entropy: bool = False
    ) -> dict[str, torch.Tensor]:
        """Per-token log-probs of the response tokens under ``lm`` (default: the policy).

        Returns ``logprobs`` ``(b, R)`` (0 where the response is masked), and ``values`` ``(b, R)``
        (value of the state *before* each response token) and ``entropy`` ``(b, R)`` when asked.
        Gradients flow when called outside ``torch.no_grad``. The policy's pass goes through
        :attr:`policy_module` (the DDP / FSDP2 wrapper under torchrun), so gradients are synchronised.
        """
        targets = gen.response_ids.masked_fill(~gen.response_mask.bool(), -100)  # (b, R)
        args = (gen.sequences, gen.attention_mask, targets, gen.prompt_len)
        if lm is None or lm is self.lm:
            if values and self.value_head is None:
                raise RuntimeError("score(values=True) needs add_value_head() first")
            if self._wrapped:
                out = self._policy_module(*args, temperature=temperature, values=values, entropy=entropy)
            else:
                out = score_tokens(self.lm, self.value_head, *args, temperature=temperature, values=values, entropy=entropy, fused_head=self._fused_head)
        else:
            out = score_tokens(lm, None, *args, temperature=temperature, entropy=entropy, fused_head=self._fused_head)
        if values:
            out["values"] = out["values"] * gen.response_mask
        return out

    # -- multi-process ------------------------------------------------------------------------

    @property
    def policy_module(self) -> nn.Module | None:
        """The wrapped :class:`PolicyModule` (DDP or FSDP2) after :meth:`parallelize`; None in one process."""
        return self._policy_module

    def parallelize(self, strategy: str) -> None:
        """Wrap the policy (``lm`` + ``value_head``) for multi-process training; a no-op in one process.

        Call once, after :meth:`add_value_head` and :meth:`make_reference` and before building the
        optimizer over :meth:`trainable_parameters` (FSDP2 replaces the parameters by shards).
        The reference stays a plain, replicated module: it is frozen, needs no gradient sync, and
        keeping it whole lets it score without collectives (see docs/architecture.md, "Scale").
        """
        from alignfw import distributed

        if self._wrapped or not distributed.is_distributed():
            return
        self._policy_module = distributed.wrap(PolicyModule(self.lm, self.value_head, self._fused_head), strategy, self.device)
        self._wrapped = strategy

    @property
    def fsdp(self) -> bool:
        return self._wrapped == "fsdp2"

    def no_sync(self, skip: bool = True):
        """Context manager: backward passes inside accumulate gradients without the cross-rank sync."""
        from alignfw import distributed

        return distributed.no_sync(self._policy_module if self._wrapped else None, skip)

    def policy_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Full (unsharded, CPU under FSDP2) state dicts ``{"lm": ..., "value_head": ...}`` of the policy.

        Under FSDP2 every rank must call this (it all-gathers the shards); elsewhere it is the
        modules' own ``state_dict()``.
        """
        if not self.fsdp:
            return {"lm": self.lm.state_dict(), "value_head": self.value_head.state_dict() if self.value_head is not None else {}}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self._policy_module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {
            "lm": {k.removeprefix("lm."): v for k, v in full.items() if k.startswith("lm.")},
            "value_head": {k.removeprefix("value_head."): v for k, v in full.items() if k.startswith("value_head.")},
        }

    def load_policy_state_dict(self, lm_state: dict[str, torch.Tensor] | None = None, value_head_state: dict[str, torch.Tensor] | None = None):
        """Load full state dicts into the policy (into the shards under FSDP2); returns ``lm``'s
        ``(missing, unexpected)`` keys (tied weights saved once show up as missing)."""
        if not self.fsdp:
            res = self.lm.load_state_dict(lm_state, strict=False) if lm_state is not None else ([], [])
            if value_head_state:
                self.value_head.load_state_dict(value_head_state)
            return res
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        full = {f"lm.{k}": v for k, v in (lm_state or {}).items()}
        full.update({f"value_head.{k}": v for k, v in (value_head_state or {}).items()})
        expected = {k.removeprefix("lm.") for k in self._policy_module.state_dict() if k.startswith("lm.")}
        missing = sorted(expected - set(lm_state or {})) if lm_state is not None else []
        unexpected = sorted(set(lm_state or {}) - expected)
        set_model_state_dict(self._policy_module, full, options=StateDictOptions(full_state_dict=True, strict=False))
        return missing, unexpected

    # -- saving -------------------------------------------------------------------------------

    def save_pretrained(self, path: str, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Hugging Face format (safetensors) that loads back in plain ``transformers``.

        ``state_dict``: the LM's full state to write instead of its live one. Under FSDP2 without
        it, every rank must call this (the shards are gathered) and only rank 0 writes.
        """
        if self.fsdp and state_dict is None:
            from alignfw import distributed

            state_dict = self.policy_state_dict()["lm"]
            if not distributed.is_main():
                return
        self.lm.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
        self.tokenizer.save_pretrained(path)


# -- the policy's forward, as one module (what DDP / FSDP2 wrap) --------------------------------


def forward_hidden(lm: Any, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states of ``lm``'s base model, ``(b, T, H)``, positions skipping left padding."""
    out = lm.base_model(
        input_ids=sequences,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def score_tokens(
    lm: Any,
    value_head: nn.Module | None,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    prompt_len: int,
    *,
    temperature: float = 1.0,
    values: bool = False,
    entropy: bool = False,
    fused_head: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Log-probs of ``targets`` (``-100``: masked) given ``sequences`` under ``lm``; see :meth:`CausalLM.score`.

    Shapes: ``sequences``, ``attention_mask`` ``(b, P + R)``; ``targets`` ``(b, R)``. Returns
    ``logprobs`` (and ``entropy``, ``values`` when asked) ``(b, R)``; ``values`` are not masked.
    """
    P = prompt_len
    hidden = forward_hidden(lm, sequences, attention_mask)  # (b, T, H)
    h = hidden[:, P - 1 : -1]  # states that predict the response tokens, (b, R, H)
    head = lm.get_output_embeddings()
    if fused_head is None:
        fused_head = isinstance(head, nn.Linear)
    if fused_head:
        res = logprobs_from_hidden(h, head.weight, targets, bias=head.bias, temperature=temperature, return_entropy=entropy)
    else:
        res = logprobs_from_logits(head(h), targets, temperature=temperature, return_entropy=entropy)
    out: dict[str, torch.Tensor] = {}
    if entropy:
        out["logprobs"], out["entropy"] = res
    else:
        out["logprobs"] = res
    if values:
        if value_head is None:
            raise RuntimeError("score(values=True) needs add_value_head() first")
        out["values"] = value_head(h).squeeze(-1).float()
    return out


class PolicyModule(nn.Module):
    """The trained policy as one ``nn.Module``: ``lm`` plus the optional ``value_head``.

    Its ``forward`` is :func:`score_tokens` (the fused log-prob head reads ``lm``'s output-embedding
    weight, so the whole computation must run inside one forward for DDP's reducer and FSDP2's
    all-gathers to see it), or, with ``generate=kwargs``, ``lm.generate(**kwargs)`` (FSDP2 needs
    the root's forward to gather the root's shards).
    """

    def __init__(self, lm: nn.Module, value_head: nn.Module | None, fused_head: bool) -> None:
        super().__init__()
        self.lm = lm
        self.value_head = value_head
        self.fused_head = fused_head

    def forward(self, *args: Any, generate: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if generate is not None:
            return self.lm.generate(**generate)
        return score_tokens(self.lm, self.value_head, *args, fused_head=self.fused_head, **kwargs)

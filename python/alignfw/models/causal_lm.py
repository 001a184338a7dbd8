"""The Hugging Face causal LM as a :class:`~alignfw.models.protocol.PolicyModel`: the network, its
tokenizer, an optional value head and a frozen reference copy, with the operations algorithms
need (encode, generate, score, wrap for several processes, save). With LoRA (``lora=``) the
network is a ``peft`` model and the reference is that network with its adapters disabled
(:mod:`alignfw.models.adapters`).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Sequence

import torch
from torch import nn

from alignfw import distributed
from alignfw.exceptions import ConfigError
from alignfw.models import adapters, chat
from alignfw.models.adapters import AdapterFreeReference, LoraOptions
from alignfw.models.loading import save_tokenizer
from alignfw.models.protocol import Generation
from alignfw.models.sampling import seeded_warpers
from alignfw.models.scoring import PolicyModule, score_tokens
from alignfw.types import ChatText

__all__ = ["PRECISIONS", "CausalLM", "context_length", "eos_token_ids"]

#: compute precision -> autocast dtype (None: no autocast, fp32 compute)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def eos_token_ids(lm: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a response: the generation config's ``eos_token_id`` (an int or a list:
    Llama-3 instruct models end turns with ``<|eot_id|>`` besides ``<|end_of_text|>``) and the
    tokenizer's EOS."""
    ids: set[int] = set()
    for source in (getattr(getattr(lm, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    return sorted(ids)


def context_length(lm: Any) -> int | None:
    """The longest sequence the model's positions allow (None: not declared)."""
    cfg = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


class CausalLM:
    """A policy: ``lm`` (``transformers`` causal LM), ``tokenizer``, optional ``value_head``, optional ``ref``."""

    def __init__(
        self,
        lm: Any,
        tokenizer: Any,
        device: torch.device | str = "cpu",
        fast_tokenizer: Any = None,
        *,
        precision: str = "fp32",
        max_length: int | None = None,
        max_prompt_length: int | None = None,
        lora: LoraOptions | None = None,
    ) -> None:
        """``fast_tokenizer``: an :class:`alignfw.tokenizer.Tokenizer` with the same vocabulary, used
        for the encode/decode calls of rollouts (Rust, GIL released, parallel over the batch); the
        Hugging Face ``tokenizer`` remains for saving and for everything else.

        ``precision``: the compute precision. ``bf16`` / ``fp16`` run every forward under
        ``torch.autocast`` while the parameters (the optimizer's master weights) and the optimizer
        state stay in their own dtype (float32 for training): bf16 has 8 significant bits, so an
        update smaller than 1/256 of a weight stored in bf16 is lost. The frozen reference is kept
        in the compute dtype (it is never updated). fp16 also scales the loss (:attr:`grad_scaler`).

        ``max_length``: the longest prompt + response scored (default: the model's context);
        ``max_prompt_length``: the longest prompt sampled from (default: ``max_length`` minus the
        new tokens). Longer prompts lose their beginning, longer responses their end; each cut is
        counted (:meth:`take_stats`).

        ``lora``: with ``enabled``, ``lm`` gets LoRA adapters (``peft``) and only they (and the
        value head) train; the reference is ``lm`` with its adapters disabled.
        """
        if precision not in PRECISIONS:
            raise ConfigError(f"model.precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.lora = lora if lora is not None and lora.enabled else None
        if self.lora is not None:
            lm = adapters.add_lora(lm, self.lora)
        self.lm = lm.to(self.device)
        self.compute_dtype = PRECISIONS[precision]
        #: fp16's dynamic loss scaler (its 5 exponent bits underflow small gradients); None otherwise
        self.grad_scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.eos_token_ids = eos_token_ids(lm, tokenizer)
        context = context_length(lm)
        self.max_length = max_length if max_length is not None else context
        if context is not None and self.max_length is not None and self.max_length > context:
            raise ConfigError(f"model.max_length={self.max_length} exceeds the model's context of {context} tokens; use at most {context}")
        self.max_prompt_length = max_prompt_length
        self._stats: dict[str, float] = {}
        # ids the network can emit but the tokenizer cannot decode (embedding matrices padded past the
        # vocabulary, as Qwen2's 151,936 rows for ~151,665 tokens): never sampled
        rows = lm.get_output_embeddings().weight.shape[0] if lm.get_output_embeddings() is not None else 0
        self._undecodable = list(range(len(tokenizer), rows))
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
        """A frozen copy of the current policy, kept on the same device.

        With LoRA: the policy's own network with its adapters disabled
        (:class:`~alignfw.models.adapters.AdapterFreeReference`), which copies no weight.
        """
        if self.ref is None:
            self._check_not_wrapped("make_reference")
            if self.lora is not None:
                self.ref = AdapterFreeReference(self.lm)
                return self.ref
            self.ref = copy.deepcopy(self.lm).eval()
            self.ref.requires_grad_(False)
            if self.compute_dtype is not None:  # frozen: no master copy needed, half the memory
                self.ref.to(self.compute_dtype)
        return self.ref

    def _check_not_wrapped(self, what: str) -> None:
        if self._wrapped:
            raise RuntimeError(f"CausalLM.{what}() after parallelize(): call it in the algorithm's __init__ before the optimizer is built")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The policy's trainable parameters (and the value head's): what the optimizer updates.

        With LoRA only the adapters require grad, so only they (and the value head) are returned.
        After :meth:`parallelize` under FSDP2 these are the sharded parameters.
        """
        params = [p for p in self.lm.parameters() if p.requires_grad]
        if self.value_head is not None:
            params += list(self.value_head.parameters())
        return params

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The compute-precision context every forward runs in (nothing for fp32)."""
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def take_stats(self) -> dict[str, float]:
        """Counters since the last call (``data/truncated_prompts``, ``data/truncated_responses``), then reset."""
        out, self._stats = self._stats, {}
        return out

    def _count(self, key: str, n: int) -> None:
        if n:
            self._stats[key] = self._stats.get(key, 0.0) + n

    def _keep_last(self, ids: torch.Tensor, mask: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``(b, P)`` prompts cut to their last ``limit`` tokens, counting the prompts that lose any."""
        if limit is None or ids.shape[1] <= limit:
            return ids, mask
        if limit < 1:
            raise ConfigError(
                f"no room for the prompt: model.max_length={self.max_length} leaves {limit} tokens; raise model.max_length "
                "or lower rollout.max_new_tokens"
            )
        self._count("data/truncated_prompts", int((mask[:, :-limit].sum(1) > 0).sum()))
        return ids[:, -limit:], mask[:, -limit:]

    # -- data ---------------------------------------------------------------------------------

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added (special-token spellings in the text
        stay plain text with the alignfw tokenizer). Texts rendered by the chat template
        (:class:`~alignfw.types.ChatText`) keep the template's special tokens; see :mod:`alignfw.models.chat`."""
        return chat.encode_texts(texts, self.tokenizer, self.fast_tokenizer)

    def decode_texts(self, ids: list[list[int]]) -> list[str]:
        """Text of each id list, special tokens dropped."""
        if self.fast_tokenizer is not None:
            return self.fast_tokenizer.decode_batch(ids, skip_special_tokens=True)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask, both ``(b, P)``.

        A plain-text prompt starts with the ids the tokenizer adds before a text (BOS, for the
        families that use one); a rendered chat has them from its template.
        """
        prefix = chat.prompt_prefix(self.tokenizer)
        ids = [x if isinstance(p, ChatText) else prefix + x for p, x in zip(prompts, self.encode_texts(prompts))]
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
        each response, because the policy must learn to stop (a rendered chat response ends at
        its first EOS, see :func:`alignfw.models.chat.response_ids`). Prompts are left-padded to ``P`` and
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
        resp = [chat.response_ids(ids, text, tok.eos_token_id) for ids, text in zip(self.encode_texts(responses), responses)]
        R = max(len(r) for r in resp)
        r_ids = torch.full((len(resp), R), tok.pad_token_id, dtype=torch.long)
        r_mask = torch.zeros((len(resp), R), dtype=torch.long)
        for i, r in enumerate(resp):
            r_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            r_mask[i, : len(r)] = 1
        r_ids, r_mask = r_ids.to(self.device), r_mask.to(self.device)
        if self.max_length is not None:  # the response keeps its beginning, the prompt its end
            if R > self.max_length - 1:
                self._count("data/truncated_responses", int((r_mask[:, self.max_length - 1 :].sum(1) > 0).sum()))
                r_ids, r_mask, R = r_ids[:, : self.max_length - 1], r_mask[:, : self.max_length - 1], self.max_length - 1
            p_ids, p_mask = self._keep_last(p_ids, p_mask, self.max_length - R)
        sequences = torch.cat([p_ids, r_ids], dim=1)  # (b, P + R)
        attention_mask = torch.cat([p_mask, r_mask], dim=1)
        return Generation(sequences, attention_mask, r_mask, p_ids.shape[1], list(responses))

    def generation_prompts(self, prompts: list[str], max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask ``(b, P)`` as :meth:`generate` (and every generation
        engine) feeds them to the network: ``encode_prompts``, then each prompt keeps its end within
        ``max_prompt_length`` and the room ``max_length`` leaves for ``max_new_tokens``."""
        ids, mask = self.encode_prompts(prompts)
        limit = self.max_prompt_length
        if self.max_length is not None:
            if max_new_tokens >= self.max_length:
                raise ConfigError(
                    f"rollout.max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                    f"{self.max_length}-token context; lower it"
                )
            room = self.max_length - max_new_tokens
            limit = room if limit is None else min(limit, room)
        return self._keep_last(ids, mask, limit)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_strings: Sequence[str] = (),
        seeds: Sequence[int] | None = None,
    ) -> Generation:
        """Sample one continuation per prompt with the policy in eval mode.

        ``seeds`` (one int per prompt): each row samples from its own stream
        (:class:`alignfw.models.sampling.SeededSampler`), so its tokens do not depend on the other
        rows of the batch; without them the rows share torch's global generator.

        Any of :attr:`eos_token_ids` ends a response (``response_mask`` keeps it, ``ended`` says so);
        so does the first of ``stop_strings``: the response keeps the tokens up to the one that
        completes it (the policy learns to write it), its text ends before it (what rewards read).
        """
        ids, mask = self.generation_prompts(prompts, max_new_tokens)
        was_training = self.lm.training
        self.lm.eval()
        tok = self.tokenizer
        sample = temperature > 0
        seeded = sample and seeds is not None
        if seeded and len(seeds) != len(prompts):
            raise ValueError(f"generate: {len(seeds)} seeds for {len(prompts)} prompts")
        kwargs = dict(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=sample and not seeded,  # seeded: greedy over the scores SeededSampler leaves
            temperature=temperature if sample and not seeded else None,
            top_k=top_k if sample and not seeded else None,
            top_p=top_p if sample and not seeded else None,
            pad_token_id=tok.pad_token_id,
            eos_token_id=self.eos_token_ids,
            suppress_tokens=self._undecodable or None,
        )
        if seeded:
            kwargs["logits_processor"] = seeded_warpers(temperature, top_k, top_p, seeds)
        if stop_strings:
            kwargs.update(stop_strings=list(stop_strings), tokenizer=tok)
        with self.autocast():
            if self.fsdp:
                # through the FSDP2 root's forward (it gathers the root's shards); synced_gpus keeps every
                # rank stepping until all are done, so the per-forward all-gathers stay matched
                out = self._policy_module(generate=dict(kwargs, synced_gpus=True))
            else:
                out = self.lm.generate(**kwargs)
        self.lm.train(was_training)
        P = ids.shape[1]
        resp = out[:, P:]  # (b, R)
        is_eos = torch.isin(resp, torch.tensor(self.eos_token_ids, device=resp.device))
        # keep tokens up to and including the first EOS
        after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        response_mask = (~after_eos).long()
        lengths = response_mask.sum(1).tolist()
        rows = [row[:n] for row, n in zip(resp.tolist(), lengths)]
        texts = self.decode_texts(rows)
        ended = is_eos.any(1)
        for i, cut in enumerate(self.stop_string_cuts(rows, texts, stop_strings)):
            if cut is not None:
                response_mask[i, cut[0] :] = 0
                texts[i], ended[i] = cut[1], True
        attention_mask = torch.cat([mask, response_mask], dim=1)
        return Generation(out, attention_mask, response_mask, P, texts, ended=ended)

    def stop_string_cuts(
        self, rows: Sequence[list[int]], texts: Sequence[str], stop_strings: Sequence[str]
    ) -> list[tuple[int, str] | None]:
        """Where each sampled response ends at a stop string: None where ``texts[i]`` (the text of
        ``rows[i]``) holds none, else ``(n, text)``: the fewest leading tokens whose text reaches the
        end of the first stop string (they are kept, so the policy learns to write it), and the text
        before the stop string (the response). :meth:`generate` and every generation engine cut here."""
        cuts: list[tuple[int, str] | None] = []
        for ids, text in zip(rows, texts):
            hits = [(text.find(s), s) for s in stop_strings if s and s in text]
            if not hits:
                cuts.append(None)
                continue
            start, stop = min(hits)
            cuts.append((self._tokens_covering(ids, start + len(stop)), text[:start]))
        return cuts

    def _tokens_covering(self, ids: list[int], chars: int) -> int:
        """The fewest leading tokens of ``ids`` whose text is at least ``chars`` characters long."""
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self.decode_texts([ids[:mid]])[0]) >= chars:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # -- scoring ------------------------------------------------------------------------------

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
            with self.autocast():
                if self._wrapped:
                    out = self._policy_module(*args, temperature=temperature, values=values, entropy=entropy)
                else:
                    out = score_tokens(
                        self.lm, self.value_head, *args, temperature=temperature, values=values, entropy=entropy, fused_head=self._fused_head
                    )
        elif isinstance(lm, AdapterFreeReference):  # frozen: never a gradient (no DDP reducer left waiting)
            with self.autocast(), torch.no_grad():
                if self._wrapped:  # through the wrapper's root (FSDP2 gathers the root's shards there)
                    out = self._policy_module(*args, temperature=temperature, entropy=entropy, adapters=False)
                else:
                    with lm.disabled() as base:
                        out = score_tokens(base, None, *args, temperature=temperature, entropy=entropy, fused_head=self._fused_head)
        else:
            with self.autocast():
                out = score_tokens(lm, None, *args, temperature=temperature, entropy=entropy, fused_head=self._fused_head)
        if values:
            out["values"] = out["values"] * gen.response_mask
        return out

    # -- multi-process ------------------------------------------------------------------------

    def parallelize(self, strategy: str | None) -> None:
        """Wrap the policy (``lm`` + ``value_head``) for multi-process training; a no-op in one
        process or with ``strategy=None``.

        Call once, after :meth:`add_value_head` and :meth:`make_reference` and before building the
        optimizer over :meth:`trainable_parameters` (FSDP2 replaces the parameters by shards).
        The reference stays a plain, replicated module: it is frozen, needs no gradient sync, and
        keeping it whole lets it score without collectives (see docs/architecture.md, "Scale").
        """
        if self._wrapped or strategy is None or not distributed.is_distributed():
            return
        if strategy == "fsdp2" and self.lora is not None and self.lora.merge:
            raise ConfigError(
                "model.lora.merge=true is not supported with distributed.strategy=fsdp2 (the merge needs the whole model in "
                "one process); train with merge=false and merge final/ afterwards with peft's merge_and_unload"
            )
        self._policy_module = distributed.wrap(PolicyModule(self.lm, self.value_head, self._fused_head), strategy, self.device)
        self._wrapped = strategy

    @property
    def fsdp(self) -> bool:
        return self._wrapped == "fsdp2"

    def no_sync(self, skip: bool = True):
        """Context manager: backward passes inside accumulate gradients without the cross-rank sync."""
        return distributed.no_sync(self._policy_module if self._wrapped else None, skip)

    def policy_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Full (unsharded, CPU under FSDP2) state dicts ``{"lm": ..., "value_head": ...}`` of the policy.

        Under FSDP2 every rank must call this (it all-gathers the shards); elsewhere it is the
        modules' own ``state_dict()``.
        """
        vh = self.value_head.state_dict() if self.value_head is not None else {}
        if not self.fsdp:
            lm = adapters.adapter_state_dict(self.lm) if self.lora is not None else self.lm.state_dict()
            return {"lm": lm, "value_head": vh}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self._policy_module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        lm = {k.removeprefix("lm."): v for k, v in full.items() if k.startswith("lm.")}
        if self.lora is not None:  # the base weights are frozen and come from model.path: only the adapters
            lm = adapters.adapter_state_dict(self.lm, lm)
        return {"lm": lm, "value_head": {k.removeprefix("value_head."): v for k, v in full.items() if k.startswith("value_head.")}}

    def load_policy_state_dict(self, lm_state: dict[str, torch.Tensor] | None = None, value_head_state: dict[str, torch.Tensor] | None = None):
        """Load full state dicts into the policy (into the shards under FSDP2); returns ``lm``'s
        ``(missing, unexpected)`` keys (tied weights saved once show up as missing).

        With LoRA ``lm_state`` holds the adapter weights (as :meth:`policy_state_dict` gives them).
        """
        if not self.fsdp:
            if lm_state is None:
                res = ([], [])
            elif self.lora is not None:
                res = adapters.load_adapter_state_dict(self.lm, lm_state)
            else:
                res = self.lm.load_state_dict(lm_state, strict=False)
            if value_head_state:
                self.value_head.load_state_dict(value_head_state)
            return res
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        expected = {k.removeprefix("lm.") for k in self._policy_module.state_dict() if k.startswith("lm.")}
        if self.lora is not None and lm_state is not None:  # adapter keys as saved -> the module's own names
            names = adapters.adapter_key_names(expected)
            expected = set(names.values())
            lm_state = {names.get(k, k): v for k, v in lm_state.items()}
        full = {f"lm.{k}": v for k, v in (lm_state or {}).items()}
        full.update({f"value_head.{k}": v for k, v in (value_head_state or {}).items()})
        missing = sorted(expected - set(lm_state or {})) if lm_state is not None else []
        unexpected = sorted(set(lm_state or {}) - expected)
        set_model_state_dict(self._policy_module, full, options=StateDictOptions(full_state_dict=True, strict=False))
        return missing, unexpected

    # -- saving -------------------------------------------------------------------------------

    def save_pretrained(self, path: str, state_dict: dict[str, torch.Tensor] | None = None, *, merge: bool | None = None) -> None:
        """Hugging Face format (safetensors) that loads back in plain ``transformers``.

        ``state_dict``: the LM's full state to write instead of its live one. Under FSDP2 without
        it, every rank must call this (the shards are gathered) and only rank 0 writes.

        With LoRA: the adapter (``adapter_config.json``, ``adapter_model.safetensors``: loads with
        ``peft.PeftModel.from_pretrained`` on the base model) and the tokenizer; ``state_dict`` is
        then the adapter's state. ``merge`` (default ``model.lora.merge``) also writes ``merged/``,
        the base model with the adapters folded in, which plain ``transformers`` loads.
        """
        if self.lora is not None:
            if self.fsdp and state_dict is None:
                state_dict = self.policy_state_dict()["lm"]
                if not distributed.is_main():
                    return
            self._save_adapter(path, state_dict, self.lora.merge if merge is None else merge)
            return
        if self.fsdp and state_dict is None:
            state_dict = self.policy_state_dict()["lm"]
            if not distributed.is_main():
                return
        self.lm.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
        save_tokenizer(self.tokenizer, path)

    def _save_adapter(self, path: str, state_dict: dict[str, torch.Tensor] | None, merge: bool) -> None:
        from pathlib import Path

        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        state = adapters.adapter_state_dict(self.lm) if state_dict is None else state_dict
        self.lm.peft_config["default"].save_pretrained(str(out))
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
        save_tokenizer(self.tokenizer, out)
        if merge:
            adapters.save_merged(self.lm, str(out / "merged"), state_dict)
            save_tokenizer(self.tokenizer, out / "merged")

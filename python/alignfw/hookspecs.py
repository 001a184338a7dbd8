"""The alignfw plugin API: the one file a plugin author reads.

A plugin is a module (or object) with ``@hookimpl`` functions, found through the ``alignfw``
entry-point group of its distribution::

    [project.entry-points.alignfw]
    toxicity = "alignfw_toxicity"

alignfw's own built-in plugins are found exactly the same way. Every hook is documented with an
example in ``docs/plugins.md`` and tested in ``tests/test_hooks.py``.

Registration hooks (one per plugin kind) receive ``register(name, factory, config=ConfigClass)``:

- ``name`` is the Hydra option: ``+reward=<name>``, ``+algo=<name>``, ``model=<name>``, ``data=<name>``,
  ``rollout.engine=<name>``;
- ``config`` is a dataclass whose fields are the component's options, stored in Hydra's ConfigStore
  under the kind's group, so ``reward.<field>=...`` is type-checked before anything runs;
- ``factory(cfg)`` builds the component from a filled-in ``config`` instance. A factory that also
  takes a parameter named ``ctx`` receives the :class:`alignfw.registry.BuildContext` (device, run
  directory, the ``run`` / ``rollout`` / ``distributed`` settings, the components built before it
  (data, model, reward, in that order), the registry itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from alignfw.registry import Register

hookspec = pluggy.HookspecMarker("alignfw")
hookimpl = pluggy.HookimplMarker("alignfw")


@hookspec
def register_models(register: Register) -> None:
    """Register models (policies, value heads, reward models).

    ``factory(cfg, ctx)`` returns an object fulfilling :class:`alignfw.models.PolicyModel` (the
    built-in :class:`alignfw.models.CausalLM` does). Selected with ``model=<name>``; options are
    ``model.<field>=...``.

    Example::

        @hookimpl
        def register_models(register):
            register("hf_causal_lm", build_hf_model, config=HFModelConfig)
    """


@hookspec
def register_rewards(register: Register) -> None:
    """Register reward functions.

    ``factory(cfg)`` returns a callable ``(prompts, responses, records) -> Tensor[B]`` (a list of
    floats is fine too). Selected with ``+reward=<name>``; options are ``reward.<field>=...``.

    Conversational data: ``prompts[i]`` is the prompt rendered by the model's chat template (what
    the policy saw, generation prompt included), ``responses[i]`` the sampled answer's text, and
    ``records[i].conversation.prompt`` the messages (``None`` conversation for plain-text rows).

    Example::

        @hookimpl
        def register_rewards(register):
            register("bleu", BleuReward, config=BleuConfig)
    """


@hookspec
def register_algorithms(register: Register) -> None:
    """Register training algorithms.

    ``factory(cfg, ctx)`` returns an object with ``step(records) -> dict[str, float]``,
    ``state_dict()`` and ``load_state_dict(state)`` (:class:`alignfw.types.Algorithm`; optional
    ``evaluate`` and ``save_pretrained``: :class:`alignfw.types.Evaluates`, ``SavesModel``). It is
    written from the public modules ``alignfw.rollout``, ``alignfw.objectives``, ``alignfw.optim``
    and ``alignfw.models``, and calls ``ctx.model.parallelize(ctx.distributed.strategy)`` before
    building its optimizer. Selected with ``+algo=<name>``; options are ``algo.<field>=...``.

    Example::

        @hookimpl
        def register_algorithms(register):
            register("ppo", PPO, config=PPOConfig)
    """


@hookspec
def register_data_sources(register: Register) -> None:
    """Register data sources.

    ``factory(cfg)`` returns an object with ``records(split) -> Iterable[Record]`` where ``split`` is
    ``"train"`` or ``"eval"`` (:class:`alignfw.types.Record`). Selected with ``data=<name>``.

    Example::

        @hookimpl
        def register_data_sources(register):
            register("jsonl", JsonlSource, config=JsonlConfig)
    """


@hookspec
def register_engines(register: Register) -> None:
    """Register generation engines: what samples the responses of online algorithms' rollouts.

    ``factory(cfg, ctx)`` returns an object with ``generate(prompts, *, max_new_tokens, temperature,
    top_k, top_p, stop_strings, seeds) -> Generation``, ``sync_weights(model)``, ``sleep()`` and
    ``wake()`` (:class:`alignfw.engines.GenerationEngine`); ``ctx.model`` is the policy it samples
    for. It is built on the first rollout; ``sync_weights`` runs before every rollout (after each
    optimizer step). Selected with ``rollout.engine=<name>`` (default ``hf``, the policy's own
    ``generate``); options are ``rollout.engine.<field>=...``.

    Example::

        @hookimpl
        def register_engines(register):
            register("vllm", VLLMEngine, config=VLLMConfig)
    """


@hookspec
def on_run_start(run_dir: str, config: dict[str, Any]) -> None:
    """Called once before the first step with the run directory and the resolved config (plain dict).

    Example::

        @hookimpl
        def on_run_start(run_dir, config):
            wandb.init(dir=run_dir, config=config)
    """


@hookspec
def on_step_end(step: int, metrics: dict[str, float]) -> None:
    """Called after every optimisation step with that step's scalar metrics.

    Example::

        @hookimpl
        def on_step_end(step, metrics):
            print(step, metrics["reward/mean"])
    """


@hookspec
def on_samples(step: int, samples: list[dict[str, Any]]) -> None:
    """Called at every evaluation with ``run.samples`` completions of held-out prompts, each a dict
    ``{"prompt", "response", "length"}`` plus ``"reward"`` and ``"rewards"`` (each part of a fused
    reward by name) when the run has a reward.

    Example::

        @hookimpl
        def on_samples(step, samples):
            for s in samples:
                print(step, s["prompt"], "->", s["response"], s.get("reward"))
    """


@hookspec
def on_checkpoint(step: int, path: str) -> None:
    """Called after a checkpoint was written (atomically) to ``path``.

    Example::

        @hookimpl
        def on_checkpoint(step, path):
            upload(path)
    """


@hookspec
def on_run_end(run_dir: str, metrics: dict[str, float]) -> None:
    """Called once after training with the final evaluation metrics.

    Example::

        @hookimpl
        def on_run_end(run_dir, metrics):
            print("done", metrics)
    """

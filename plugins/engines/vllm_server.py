"""vLLM as a separate server: ``rollout.engine=vllm_server`` samples on another GPU or node.

Start the server where vLLM is installed (a GPU machine, or ``.venv-vllm`` on CPU)::

    python -m alignfw.plugins.engines.vllm_server --model PATH/TO/POLICY --port 8011

then train with ``rollout.engine=vllm_server rollout.engine.url=http://HOST:8011``. ``--model`` is a
Hugging Face model folder with the policy's architecture (``config.json``; its weights are replaced
by the trainer's on the first sync, so ``--load-format dummy`` skips reading them).

The trainer is the client. It tokenizes prompts itself, sends ids and sampling options to
``POST /generate`` and builds the :class:`~alignfw.engines.SampledGeneration` from the returned
tokens and log-probs, exactly as the colocated engine does. Weights go before a rollout when the
optimizer changed them (all of them, LoRA merged: :func:`~alignfw.plugins.engines.vllm.llm_weights`):

- ``sync=http`` (default): in the body of ``POST /weights`` (safetensors bytes); simple, works
  anywhere, costs a serialisation;
- ``sync=distributed``: over a two-process ``torch.distributed`` group between the trainer (rank 0)
  and the server (rank 1), gloo or NCCL (``rollout.engine.backend``), made apart from the trainer's
  own torchrun group on ``rollout.engine.group_port``; ``POST /weights/receive`` tells the server
  which tensors to expect, then the trainer broadcasts them.

Every request, the group's creation and every collective has a timeout (``timeout_s``): a dead or
stuck server ends in one :class:`~alignfw.engines.EngineError` naming the server and the fix,
never in a hang. The server answers one request at a time (vLLM's ``LLM`` is not re-entrant).
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence

import torch

from alignfw.engines import EngineError, SampledGeneration, WeightFingerprints, generation_from_tokens
from alignfw.exceptions import ConfigError
from alignfw.hookspecs import hookimpl
from alignfw.plugins.engines.vllm import import_vllm, llm_weights, load_weights, require_one_process, sample, sampling_options, unpadded
from alignfw.registry import BuildContext

__all__ = ["VLLMServerConfig", "VLLMServerEngine", "serve"]

START = "python -m alignfw.plugins.engines.vllm_server --model <policy dir> --port {port}"


@dataclass
class VLLMServerConfig:
    """Options of the vLLM server client (``rollout.engine.<field>``)."""

    url: str = "http://127.0.0.1:8011"  #: where ``python -m alignfw.plugins.engines.vllm_server`` listens
    timeout_s: float = 300.0  #: longest wait for any answer or collective (a rollout's generation included)
    connect_timeout_s: float = 10.0  #: longest wait for the first health check
    sync: str = "http"  #: how weights travel: http (request body) or distributed (torch.distributed broadcast)
    backend: str = "gloo"  #: sync=distributed: gloo (CPU tensors) or nccl (GPU to GPU)
    group_host: str = "127.0.0.1"  #: sync=distributed: the trainer's address as the server reaches it
    group_port: int = 29555  #: sync=distributed: a free port on the trainer for the group's store


class VLLMServerEngine:
    """Client of a vLLM server started with this module's ``serve``."""

    def __init__(self, cfg: VLLMServerConfig, ctx: BuildContext) -> None:
        if cfg.sync not in ("http", "distributed"):
            raise ConfigError(f"rollout.engine.sync={cfg.sync!r}: use http or distributed")
        if cfg.timeout_s <= 0 or cfg.connect_timeout_s <= 0:
            raise ConfigError("rollout.engine.timeout_s and rollout.engine.connect_timeout_s must be > 0 (seconds)")
        require_one_process("vllm_server")
        self.cfg, self.model = cfg, ctx.model
        self.url = cfg.url.rstrip("/")
        self.info = self._request("GET", "/health", timeout=cfg.connect_timeout_s)
        self._seen = WeightFingerprints()
        self._group: Any = None
        self.sync_weights(self.model)

    # -- transport ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None, raw: bytes | None = None) -> Any:
        """One HTTP request with a timeout; any failure is one EngineError with the fix."""
        timeout = self.cfg.timeout_s if timeout is None else timeout
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        port = self.url.rsplit(":", 1)[-1].split("/")[0]
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise EngineError(f"the vLLM server at {self.url} rejected {method} {path} (HTTP {e.code}): {detail}") from None
        except (TimeoutError, socket.timeout) as e:
            raise EngineError(
                f"the vLLM server at {self.url} did not answer {method} {path} within {timeout:g} s ({e}); check the server's "
                "log, or raise rollout.engine.timeout_s if a rollout legitimately takes longer"
            ) from None
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise EngineError(
                f"no vLLM server answers at {self.url} ({reason}); start one with `{START.format(port=port or 8011)}` "
                "(docs/engines.md), or point rollout.engine.url at it"
            ) from None

    # -- the engine interface -----------------------------------------------------------------

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
        ids, mask = self.model.generation_prompts(prompts, max_new_tokens)
        options = sampling_options(self.model, max_new_tokens, temperature, top_k, top_p)
        body = {"prompts": unpadded(ids, mask), "options": options, "seeds": None if seeds is None else [int(s) for s in seeds]}
        out = self._request("POST", "/generate", body)
        return generation_from_tokens(self.model, ids, mask, out["tokens"], stop_strings, out["logprobs"])

    def sync_weights(self, model: Any) -> None:
        weights = llm_weights(model.lm, self._seen)
        if not weights:
            return
        if self.cfg.sync == "http":
            from safetensors.torch import save

            payload = save({name: t.to("cpu").contiguous() for name, t in weights})
            self._request("POST", "/weights", raw=payload)
        else:
            self._broadcast(weights)

    def sleep(self) -> None:
        self._request("POST", "/sleep", {})

    def wake(self) -> None:
        self._request("POST", "/wake_up", {})

    # -- torch.distributed weight sync --------------------------------------------------------

    def _broadcast(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """Tell the server what comes (``/weights/receive``, answered once it has loaded them), then
        broadcast each tensor from rank 0. The request runs in a thread, everything with the timeout."""
        cfg = self.cfg
        if self._group is None:
            store = weight_store(cfg.group_host, cfg.group_port, 0, cfg.timeout_s)  # the server connects to it
            body = {"host": cfg.group_host, "port": cfg.group_port, "backend": cfg.backend, "timeout_s": cfg.timeout_s}
            self._group = self._alongside("/group", body, lambda: weight_group(store, 0, cfg.backend, cfg.timeout_s))
        device = torch.device("cuda") if cfg.backend == "nccl" else torch.device("cpu")
        meta = [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for n, t in weights]

        def send() -> None:
            for _, t in weights:
                broadcast(self._group, t.detach().to(device).contiguous(), cfg.timeout_s)

        self._alongside("/weights/receive", {"tensors": meta}, send)

    def _alongside(self, path: str, body: Any, work: Any) -> Any:
        """POST ``path`` in a thread while ``work()`` runs here (the two sides of a collective)."""
        result: dict[str, Any] = {}

        def call() -> None:
            try:
                result["reply"] = self._request("POST", path, body)
            except EngineError as e:
                result["error"] = e

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        try:
            out = work()
        except RuntimeError as e:
            thread.join(1.0)
            if "error" in result:
                raise result["error"] from None
            raise EngineError(
                f"weight sync with the vLLM server at {self.url} over torch.distributed ({self.cfg.backend}) failed: {e}; check "
                f"that the server reaches {self.cfg.group_host}:{self.cfg.group_port} (rollout.engine.group_host / group_port), "
                "or use rollout.engine.sync=http"
            ) from None
        thread.join(self.cfg.timeout_s)
        if "error" in result:
            raise result["error"]
        if thread.is_alive():
            raise EngineError(f"the vLLM server at {self.url} did not answer POST {path} within {self.cfg.timeout_s:g} s")
        return out


# -- the two-process weight group ---------------------------------------------------------------


def weight_store(host: str, port: int, rank: int, timeout_s: float) -> Any:
    """The rendezvous store of the trainer (rank 0, which hosts it) and the server (rank 1)."""
    from torch.distributed import TCPStore

    return TCPStore(host, port, world_size=2, is_master=rank == 0, timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False)


def weight_group(store: Any, rank: int, backend: str, timeout_s: float) -> Any:
    """A two-rank process group apart from any torchrun group (so the trainer's own ranks are untouched)."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if backend == "gloo":
        from torch.distributed import ProcessGroupGloo

        return ProcessGroupGloo(store, rank, 2, timeout)
    if backend == "nccl":
        from torch.distributed import ProcessGroupNCCL

        opts = ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return ProcessGroupNCCL(store, rank, 2, opts)
    raise ConfigError(f"rollout.engine.backend={backend!r}: use gloo or nccl")


def broadcast(group: Any, tensor: torch.Tensor, timeout_s: float) -> None:
    """Broadcast ``tensor`` in place from rank 0 of ``group``, waiting at most ``timeout_s``."""
    from torch.distributed import BroadcastOptions

    opts = BroadcastOptions()
    opts.rootRank = 0
    group.broadcast([tensor], opts).wait(datetime.timedelta(seconds=timeout_s))


# -- the server -----------------------------------------------------------------------------------


class _Server:
    """One vLLM ``LLM`` behind the HTTP endpoints the client calls."""

    def __init__(self, args: argparse.Namespace) -> None:
        vllm = import_vllm()
        self.version = vllm.__version__
        self.model = args.model
        kwargs: dict[str, Any] = dict(
            model=args.model, skip_tokenizer_init=True, load_format=args.load_format, dtype=args.dtype, seed=args.seed,
            enable_prefix_caching=True, logprobs_mode="processed_logprobs", generation_config="vllm",
            enforce_eager=args.enforce_eager,
        )  # fmt: skip
        if args.max_model_len:
            kwargs["max_model_len"] = args.max_model_len
        if torch.cuda.is_available():
            kwargs.update(gpu_memory_utilization=args.gpu_memory_utilization, enable_sleep_mode=True)
        self.llm = vllm.LLM(**kwargs)
        self.sleeps = torch.cuda.is_available()
        self.asleep = False
        self.group: Any = None
        self.lock = threading.Lock()

    def handle(self, path: str, body: bytes) -> Any:
        with self.lock:
            if path == "/health":
                return {"status": "ok", "model": self.model, "vllm": self.version}
            if path == "/generate":
                req = json.loads(body)
                tokens, logprobs = sample(self.llm, req["prompts"], req["options"], req.get("seeds"))
                return {"tokens": tokens, "logprobs": logprobs}
            if path == "/weights":
                from safetensors.torch import load

                self._load(list(load(body).items()))
                return {"loaded": True}
            if path == "/group":
                req = json.loads(body)
                store = weight_store(req["host"], req["port"], 1, req["timeout_s"])
                self.group = (weight_group(store, 1, req["backend"], req["timeout_s"]), req, store)
                return {"joined": True}
            if path == "/weights/receive":
                if self.group is None:
                    raise ValueError("POST /group first")
                group, req, _ = self.group
                device = torch.device("cuda") if req["backend"] == "nccl" else torch.device("cpu")
                weights = []
                for t in json.loads(body)["tensors"]:
                    buf = torch.empty(t["shape"], dtype=getattr(torch, t["dtype"]), device=device)
                    broadcast(group, buf, req["timeout_s"])
                    weights.append((t["name"], buf))
                self._load(weights)
                return {"loaded": True}
            if path == "/sleep":
                if self.sleeps and not self.asleep:
                    self.llm.sleep(level=1)
                    self.asleep = True
                return {"asleep": self.asleep}
            if path == "/wake_up":
                if self.asleep:
                    self.llm.wake_up()
                    self.asleep = False
                return {"asleep": self.asleep}
            raise KeyError(path)

    def _load(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        load_weights(self.llm, weights)


def serve(argv: list[str] | None = None) -> None:
    """Run the server until interrupted (``python -m alignfw.plugins.engines.vllm_server --help``)."""
    ap = argparse.ArgumentParser(prog="python -m alignfw.plugins.engines.vllm_server", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a Hugging Face model folder with the policy's architecture")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--load-format", default="auto", help="dummy: random weights until the trainer's first sync")
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--enforce-eager", action="store_true", help="no torch.compile / CUDA graphs: starts in seconds")
    args = ap.parse_args(argv)
    server = _Server(args)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            try:
                out, code = server.handle(self.path, body), 200
            except KeyError:
                out, code = {"error": f"no endpoint {method} {self.path}"}, 404
            except Exception as e:  # the client shows this text in its EngineError
                out, code = {"error": f"{type(e).__name__}: {e}"}, 500
            data = json.dumps(out).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"alignfw vLLM server on http://{args.host}:{args.port} (vLLM {server.version}, model {args.model})", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


@hookimpl
def register_engines(register):
    register("vllm_server", VLLMServerEngine, config=VLLMServerConfig, description="a vLLM server on another GPU or node (HTTP)")


if __name__ == "__main__":
    serve()

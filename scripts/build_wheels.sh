#!/usr/bin/env bash
# Builds, on one Linux x86_64 machine, what a release uploads for Linux: the sdist and abi3 wheels
# (one per architecture serves CPython 3.10+) for manylinux2014 (glibc 2.17) x86_64 and aarch64,
# stripped, into dist/. zig links both against glibc 2.17's symbols, so no manylinux container is
# needed and aarch64 is a cross-compile. Then each wheel must pass `auditwheel show` with a policy of
# at most manylinux_2_17 and weigh at most 3 MB, and every file `twine check --strict`.
# macOS, Windows and musllinux wheels come from .github/workflows/release.yml (docs/releasing.md).
#
#   bash scripts/build_wheels.sh                   # tools into a venv under target/, output in dist/
#   TOOLS_VENV=.venv bash scripts/build_wheels.sh  # a venv that has (or may get) the tools: .ci/run
#   ARCHS=x86_64 bash scripts/build_wheels.sh      # one architecture
#
# Needs Python >= 3.10, cargo, rustup (it adds the aarch64 standard library once) and PyPI access.
set -euo pipefail
cd "$(dirname "$0")/.."
archs=${ARCHS:-"x86_64 aarch64"}
max_bytes=$((3 * 1024 * 1024))
venv=${TOOLS_VENV:-target/wheel-tools}

# maturin's zig extra brings the ziglang wheel (zig as a PyPI package: nothing else to install).
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q "maturin[zig]>=1.9.3,<2" auditwheel twine
bin=$(cd "$venv/bin" && pwd)
export PATH="$bin:$PATH"
echo "== tools: $(maturin --version), zig $(python -m ziglang version), auditwheel $(python -m auditwheel --version | head -n 1 | awk "{print \$2}")"

for arch in $archs; do
    target=$arch-unknown-linux-gnu
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target"
    fi
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
quiet() {  # run "$@", print its last line, or all of its end if it fails
    "$@" >"$log" 2>&1 || { tail -n 40 "$log"; return 1; }
    tail -n 1 "$log"
}

rm -rf dist
quiet maturin sdist --out dist

for arch in $archs; do
    echo "== wheel manylinux2014 $arch"
    start=$SECONDS
    # One target directory per architecture, so that a rebuild reuses its own artefacts.
    CARGO_TARGET_DIR=target/wheels-$arch quiet maturin build --release --zig --compatibility manylinux2014 \
        --target "$arch-unknown-linux-gnu" --out dist
    echo "   built in $((SECONDS - start)) s"
done

echo "== checks"
shopt -s nullglob
wheels=(dist/*.whl)
[ ${#wheels[@]} -eq "$(wc -w <<<"$archs")" ] || { echo "expected one wheel per architecture in dist/, found: ${wheels[*]}"; exit 1; }
for whl in "${wheels[@]}"; do
    size=$(stat -c %s "$whl")
    [ "$size" -le "$max_bytes" ] || { echo "$whl: $size bytes, over the 3 MB budget"; exit 1; }
    report=$(auditwheel show "$whl")
    # "... is consistent with the following platform tag: "manylinux_2_17_x86_64"." (wrapped lines)
    policy=$(tr '\n' ' ' <<<"$report" | grep -oE 'consistent with the following platform tag: *"[a-z0-9_]+"' | grep -oE '"[a-z0-9_]+"' | tr -d '"')
    glibc_minor=$(sed -nE 's/^manylinux_2_([0-9]+)_.*/\1/p' <<<"$policy")
    if [ -z "$glibc_minor" ] || [ "$glibc_minor" -gt 17 ]; then
        echo "$whl: auditwheel policy '$policy' is not manylinux_2_17 or older"; echo "$report"; exit 1
    fi
    echo "   $(basename "$whl"): $size bytes, auditwheel: $policy"
done
twine check --strict dist/*
ls -l dist

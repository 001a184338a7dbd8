"""The distributions are what PyPI and users need: self-contained wheels (kernels, plugins and configs
inside ``alignfw/``, nothing else at the top level), abi3 and manylinux2014 for x86_64 and aarch64,
stripped, with full metadata and the license; an sdist that builds a working wheel from scratch;
installed into fresh venvs of the oldest and newest supported Python, with no Rust toolchain on
PATH, the wheel runs the main job, the tokenizer and GAE; a third-party plugin installed with pip
appears in the CLI with its own typed config.

Each test runs when ``.ci/run`` (through ``scripts/build_wheels.sh``) points it at what it checks:
``ALIGNFW_WHEEL`` (x86_64 wheel), ``ALIGNFW_WHEEL_AARCH64``, ``ALIGNFW_SDIST``,
``ALIGNFW_TEST_PYTHONS`` (interpreters for the fresh venvs; default: this one) and
``ALIGNFW_ARM64_ROOT`` (an arm64 Python for qemu, from ``scripts/arm64_python.sh``).
"""

from __future__ import annotations

import email.parser
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO, run_cli

WHEEL = os.environ.get("ALIGNFW_WHEEL")
WHEELS = {"x86_64": WHEEL, "aarch64": os.environ.get("ALIGNFW_WHEEL_AARCH64")}
SDIST = os.environ.get("ALIGNFW_SDIST")
PYTHONS = os.environ.get("ALIGNFW_TEST_PYTHONS", sys.executable).split()
ARM64_ROOT = os.environ.get("ALIGNFW_ARM64_ROOT")
SMOKE = REPO / "tests" / "wheel_smoke.py"
SMALL = ["run.steps=2", "run.batch_size=8", "run.eval_size=8", "run.eval_every=0", "rollout.max_new_tokens=8", "hydra.run.dir=out"]
VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]
needs_wheel = pytest.mark.skipif(not WHEEL, reason="set ALIGNFW_WHEEL to a built wheel (.ci/run does)")
needs_sdist = pytest.mark.skipif(not SDIST, reason="set ALIGNFW_SDIST to a built sdist (.ci/run does)")


def wheel_for(arch: str) -> str:
    if not WHEELS[arch]:
        pytest.skip(f"no {arch} wheel given (.ci/run builds both with scripts/build_wheels.sh)")
    return WHEELS[arch]


def dist_info(names) -> str:
    return next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))


def no_rust_env() -> dict[str, str]:
    """This environment with every PATH entry that holds cargo or rustc removed: a user's machine."""
    path = [d for d in os.environ["PATH"].split(os.pathsep) if not any((Path(d) / t).exists() for t in ("cargo", "rustc"))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIGNFW_", "CARGO", "RUSTUP"))}
    env["PATH"] = os.pathsep.join(path)
    assert shutil.which("cargo", path=env["PATH"]) is None and shutil.which("rustc", path=env["PATH"]) is None
    return env


def make_venv(where: Path, python: str = sys.executable) -> Path:
    subprocess.run([python, "-m", "venv", str(where)], check=True)
    return where / "bin" / "python"


# --- what is inside --------------------------------------------------------------------------------


@needs_wheel
def test_wheel_layout():
    names = set(zipfile.ZipFile(WHEEL).namelist())
    info = dist_info(names)
    assert {
        "alignfw/kernels/__init__.py",
        "alignfw/plugins/__init__.py",
        "alignfw/plugins/algorithms/ppo.py",
        "alignfw/plugins/models/tiny/model.safetensors",
        "alignfw/conf/config.yaml",
        "alignfw/conf/preset/tiny_ppo.yaml",
        "alignfw/_native.pyi",
        "alignfw/py.typed",
        f"{info}/licenses/LICENSE",
    } <= names
    assert any(n.startswith("alignfw/_native") and n.endswith(".so") for n in names)
    assert {n.split("/")[0] for n in names} <= {"alignfw", info}  # nothing else at site-packages' top
    assert not {"alignfw/kernels", "alignfw/plugins", "alignfw/conf"} & names  # a symlink stored as a file
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    eps = zipfile.ZipFile(WHEEL).read(f"{info}/entry_points.txt").decode()
    assert "[alignfw]" in eps and "alignfw.plugins.algorithms.ppo" in eps


@needs_wheel
def test_wheel_metadata_is_complete_for_pypi():
    trove = pytest.importorskip("trove_classifiers")  # .ci/run installs it
    zf = zipfile.ZipFile(WHEEL)
    info = dist_info(zf.namelist())
    meta = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode())
    assert meta["Name"] == "alignfw" and meta["Version"] == VERSION  # the one version: Cargo.toml
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["License-Expression"] == "Apache-2.0" and meta["License-File"] == "LICENSE"
    assert zf.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0, January 2004" in (REPO / "LICENSE").read_text()
    assert 20 < len(meta["Summary"]) <= 120
    assert meta["Description-Content-Type"].startswith("text/markdown") and "## Install" in meta.get_payload()

    classifiers = meta.get_all("Classifier")
    assert not set(classifiers) - trove.classifiers, "PyPI rejects unknown classifiers"
    assert not [c for c in classifiers if c.startswith("License ::")], "License-Expression replaces License classifiers"
    assert {f"Programming Language :: Python :: 3.{m}" for m in (10, 11, 12, 13)} <= set(classifiers)
    assert {"Operating System :: POSIX :: Linux", "Operating System :: MacOS", "Operating System :: Microsoft :: Windows"} <= set(classifiers)
    assert any(c.startswith("Topic :: ") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Repository", "Issues", "Documentation"} <= urls.keys()
    assert all(u.startswith("https://") for u in urls.values())


def test_the_version_lives_in_cargo_toml_only():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in pyproject and "version" in pyproject["dynamic"]
    for crate in ("alignfw-core", "alignfw-py"):
        package = tomllib.loads((REPO / "rust" / crate / "Cargo.toml").read_text())["package"]
        assert package["version"] == {"workspace": True}, crate


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_wheel_is_abi3_manylinux2014_and_stripped(arch):
    """Static checks that hold without running the wheel's machine code (so also for aarch64 here)."""
    from elftools.elf.elffile import ELFFile  # pyelftools, installed with auditwheel

    zf = zipfile.ZipFile(wheel_for(arch))
    info = dist_info(zf.namelist())
    wheel_file = zf.read(f"{info}/WHEEL").decode()
    tags = {line.split(": ", 1)[1] for line in wheel_file.splitlines() if line.startswith("Tag: ")}
    assert tags == {f"cp310-abi3-manylinux_2_17_{arch}", f"cp310-abi3-manylinux2014_{arch}"}
    assert "Root-Is-Purelib: false" in wheel_file

    elf = ELFFile(io.BytesIO(zf.read("alignfw/_native.abi3.so")))
    assert elf["e_machine"] == {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}[arch]
    assert elf.get_section_by_name(".symtab") is None, "not stripped"
    assert not [s.name for s in elf.iter_sections() if s.name.startswith(".debug")]
    dynamic = elf.get_section_by_name(".dynamic")
    needed = {t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"}
    # glibc and the compiler runtime only: no libpython (abi3 extensions resolve the C API from the
    # interpreter), nothing auditwheel would have to vendor.
    assert needed <= {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libgcc_s.so.1",
                      "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}, needed
    symbols = list(elf.get_section_by_name(".dynsym").iter_symbols())
    exported = {s.name for s in symbols if s["st_shndx"] != "SHN_UNDEF" and s["st_info"]["type"] == "STT_FUNC"
                and s["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")}
    assert exported == {"PyInit__native"}
    glibc = {tuple(int(p) for p in aux.name.removeprefix("GLIBC_").split("."))
             for version in elf.get_section_by_name(".gnu.version_r").iter_versions()
             for aux in version[1] if aux.name.startswith("GLIBC_")}
    assert max(glibc) <= (2, 17), f"needs glibc {max(glibc)}: manylinux2014 promises 2.17"


@needs_sdist
def test_sdist_holds_real_files_and_the_license():
    with tarfile.open(SDIST) as tar:
        members = {m.name: m for m in tar.getmembers()}
        pkg_info = email.parser.Parser().parsestr(tar.extractfile(f"alignfw-{VERSION}/PKG-INFO").read().decode())
    top = f"alignfw-{VERSION}/"
    assert all(n.startswith(top) or n == top.rstrip("/") for n in members)
    names = {n.removeprefix(top) for n in members}
    assert {
        "LICENSE", "README.md", "pyproject.toml", "Cargo.toml", "Cargo.lock", "PKG-INFO",
        "rust/alignfw-core/Cargo.toml", "rust/alignfw-core/src/lib.rs", "rust/alignfw-py/src/lib.rs",
        "python/alignfw/__init__.py", "python/alignfw/_native.pyi", "python/alignfw/kernels/fused_logprob.py",
        "python/alignfw/plugins/models/tiny/model.safetensors", "python/alignfw/conf/config.yaml",
    } <= names
    assert not [m.name for m in members.values() if m.issym() or m.islnk()], "links break on Windows"
    junk = ("target/", ".venv", "__pycache__", ".pyc", "dist/", "outputs/", ".git/", ".hypothesis")
    assert not [n for n in names if any(j in n for j in junk)]
    assert pkg_info["Version"] == VERSION and pkg_info["License-File"] == "LICENSE"


# --- what it does on a user's machine ------------------------------------------------------------


@pytest.fixture(scope="module", params=PYTHONS, ids=lambda p: Path(p).name)
def fresh_venv(request, tmp_path_factory) -> Iterator[Path]:
    """A venv outside the repository with the wheel and its dependencies, installed without Rust."""
    if not WHEEL:
        pytest.skip("set ALIGNFW_WHEEL to a built wheel (.ci/run does)")
    where = tmp_path_factory.mktemp("fresh")
    py = make_venv(where / "venv", request.param)
    subprocess.run([str(py), "-m", "pip", "install", "-q", WHEEL], check=True, timeout=1500, env=no_rust_env())
    yield py
    # each holds torch with its CUDA libraries (~5.5 GB): one at a time keeps CI's disk peak down
    shutil.rmtree(where, ignore_errors=True)


@pytest.mark.slow
def test_main_job_tokenizer_and_gae_from_a_fresh_venv(fresh_venv, tmp_path):
    r = subprocess.run([str(fresh_venv), str(SMOKE), "--main-job", str(tmp_path)], cwd=tmp_path,
                       env=no_rust_env(), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    print(r.stdout)
    assert "ok: main job" in r.stdout and "ok: alignfw.ops.gae == reference_gae" in r.stdout
    # imported from the venv, not from the repository
    assert f"loads from {fresh_venv.parents[1]}" in r.stdout


@pytest.mark.slow
def test_third_party_plugin_installs_and_runs(fresh_venv, request, tmp_path):
    if request.node.callspec.params["fresh_venv"] != PYTHONS[-1]:
        pytest.skip("the plugin path is checked once, in the newest Python's venv")
    plugin = REPO / "tests" / "fixtures" / "alignfw-example-plugin"
    subprocess.run([str(fresh_venv), "-m", "pip", "install", "-q", str(plugin)], check=True, timeout=600, env=no_rust_env())
    listed = run_cli("plugins", cwd=tmp_path, python=str(fresh_venv))
    assert "brevity" in listed.stdout and "alignfw-example-plugin 0.1.0" in listed.stdout
    assert "reward.target_words: int = 3" in listed.stdout

    r = run_cli("+algo=ppo", "+reward=brevity", "reward.target_words=4", *SMALL, cwd=tmp_path, python=str(fresh_venv))
    assert r.returncode == 0, r.stderr[-3000:]
    note = json.loads((tmp_path / "out" / "example_plugin.json").read_text())
    assert "eval/reward" in note["seen_metrics"]
    assert "target_words: 4" in (tmp_path / "out" / "config.yaml").read_text()

    # its algorithm, written from alignfw's public modules only, with its own typed options
    algo = run_cli("+algo=best_of_n", "+reward=bleu", "algo.num_samples=2", *SMALL[:-1], "hydra.run.dir=out2", cwd=tmp_path, python=str(fresh_venv))
    assert algo.returncode == 0, algo.stderr[-3000:]
    assert "num_samples: 2" in (tmp_path / "out2" / "config.yaml").read_text()

    typo = run_cli("+algo=ppo", "+reward=brevity", "reward.target_wrds=4", *SMALL, cwd=tmp_path, python=str(fresh_venv))
    assert typo.returncode != 0 and "target_wrds" in typo.stderr and "BrevityConfig" in typo.stderr


@pytest.mark.slow
@needs_sdist
def test_sdist_builds_a_working_wheel_from_scratch(tmp_path):
    """pip builds the sdist in an isolated environment (maturin from PyPI, a cold cargo target, no
    zig); the wheel holds the same files as the one built from the checkout, stripped, and works."""
    out = tmp_path / "built"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIGNFW_", "CARGO_TARGET_DIR", "MATURIN_"))}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir", "-w", str(out), SDIST],
                   check=True, timeout=1800, env=env, cwd=tmp_path)
    (built,) = out.glob("alignfw-*.whl")
    if WHEEL:
        assert set(zipfile.ZipFile(built).namelist()) == set(zipfile.ZipFile(WHEEL).namelist())
    from elftools.elf.elffile import ELFFile

    # pyproject's strip = true holds for a plain pip build too, not only for zig's
    native = ELFFile(io.BytesIO(zipfile.ZipFile(built).read("alignfw/_native.abi3.so")))
    assert native.get_section_by_name(".symtab") is None, "pip's build of the sdist is not stripped"

    py = make_venv(tmp_path / "venv")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(built), "numpy"], check=True, timeout=600)
    r = subprocess.run([str(py), str(SMOKE)], cwd=tmp_path, env=no_rust_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "ok: Rust GAE == NumPy reference" in r.stdout


@pytest.mark.slow
def test_aarch64_wheel_runs_under_qemu(tmp_path):
    wheel = wheel_for("aarch64")
    if not ARM64_ROOT:
        pytest.skip("set ALIGNFW_ARM64_ROOT (scripts/arm64_python.sh; .ci/run does as root)")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    (site / "alignfw" / "_native.abi3.so").chmod(0o755)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site), "LC_ALL": "C.UTF-8"}
    r = subprocess.run(["qemu-aarch64-static", "-L", ARM64_ROOT, f"{ARM64_ROOT}/usr/bin/python3", str(SMOKE)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    print(r.stdout)
    assert "on aarch64" in r.stdout and "ok: Rust GAE == NumPy reference" in r.stdout

#!/usr/bin/env bash
# One GPU, at most 15 minutes: what the paper's run costs on a GPU with this code.
#
#   1. sampler throughput at batch 1000 and 10000 (paper config), against the public
#      recipe (full forward per token, float64) on the same GPU;
#   2. one PPO step of 1000 samples with the Orb reward on the same GPU as JAX (JAX
#      allocates on demand and is capped at 45 % of the memory, torch at 45 %), split
#      into sample / decode / reward / update, and Orb batched vs one ASE call each;
#   3. a pretraining step at batch 8000 (the paper's global batch) and at 1000 (its
#      per-device batch on 8 A100s).
# Ratios against the paper's own GPU figures are printed where they exist. Everything
# goes to $OUT (gpu_check.log, gpu_check.json); weights are random (a published
# checkpoint can be given as GPU_CHECK_CKPT=path/epoch_*.pkl).
#
# The GPU machine reaches no package index. crystalrl runs from src/ (PYTHONPATH);
# JAX with CUDA, torch, flax, optax and orbax must be installed there; the rest
# (pymatgen, ase, spglib, orb-models, jsonschema, ...) travels as wheels in .whl/ (21 MB),
# made beforehand where PyPI is reachable (python 3.12, manylinux x86-64):
#   bench/gpu_check.sh --fetch-wheels            # writes .whl/ (git-ignore it)
# then on the GPU machine, from the repo root:
#   OUT=/tmp/out bench/gpu_check.sh
# GPU_CHECK_DRY=1 runs every Python part on the CPU with tiny sizes (a rehearsal here);
# GPU_CHECK_PARTS=sampler,orb_ppo_step,pretrain_step picks parts (a rerun in the time left).
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
# What the GPU image lacks (its package list: torch, jax[cuda], flax, optax, orbax,
# numpy, scipy, pandas, pyarrow, networkx, sympy, lxml, psutil, pyyaml, ... are there).
# Pins as pyproject.toml and .venv; the others are what those import (GPU_CHECK_DRY=1 lists them).
# cached_path (orb-models' downloader, which pulls boto3 and google-cloud) is stubbed: weights are local.
FETCH=(pymatgen==2026.10.24 pymatgen-core==2026.10.16 spglib==2.8.0 ase==3.29.0 orb-models==0.5.5
       dm-tree==0.1.8 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
       rpds-py==2026.9.1 monty==2026.10.21 orjson==3.13.0 palettable==3.3.3 uncertainties==3.2.3
       plotly==7.1.0 narwhals==2.29.0 ruamel.yaml==0.19.1 numexpr==2.14.2 dill==0.4.1 threadpoolctl==3.8.0)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p "$WHEELS"
    for spec in "${FETCH[@]}"; do
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$WHEELS" "$spec" \
            || { echo "gpu_check: no wheel for $spec (python 3.12, manylinux x86-64)" >&2; exit 2; }
    done
    du -sh "$WHEELS"
    echo "wheels in $WHEELS; the tree that travels must stay under 64 MiB"
    exit 0
fi

OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
echo "gpu_check $(date -u +%FT%TZ) on $(hostname); dry=${GPU_CHECK_DRY:-0}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu_check_site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/gpu_check_site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
# the workflow's one GPU memory policy (crystalrl.devices, config `runtime`): JAX on demand
# up to 45 %, torch capped at 45 % in the Python part; torch's cache in expandable segments
export CRYSTALRL_JAX_MEMORY_FRACTION=${CRYSTALRL_JAX_MEMORY_FRACTION:-0.45}
export CRYSTALRL_TORCH_MEMORY_FRACTION=${CRYSTALRL_TORCH_MEMORY_FRACTION:-0.45}
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
if [[ "${GPU_CHECK_DRY:-0}" == 1 ]]; then export JAX_PLATFORMS=cpu; else export JAX_PLATFORMS=cuda; fi

SCRIPT=$(mktemp --suffix=.py)
trap 'rm -f "$SCRIPT"' EXIT
cat >"$SCRIPT" <<'EOF'
"""The measurements of bench/gpu_check.sh (see there)."""
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from crystalrl.devices import apply_memory_policy, cap_torch_memory, found_backends

apply_memory_policy()  # before JAX starts: the same code as the workflow's PPO jobs
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

warnings.filterwarnings("ignore")
DRY = os.environ.get("GPU_CHECK_DRY") == "1"
try:
    import cached_path  # noqa: F401
except ImportError:  # orb-models imports it to download weights (boto3, google-cloud...); a local file needs none
    import types
    _stub = types.ModuleType("cached_path")

    def _local_only(url_or_filename, *args, **kwargs):
        if not Path(url_or_filename).exists():
            raise RuntimeError(f"{url_or_filename}: no download here (cached_path is not installed)")
        return Path(url_or_filename)

    _stub.cached_path = _local_only
    sys.modules["cached_path"] = _stub
_bad = []
for _m in ("jax", "flax", "optax", "orbax.checkpoint", "torch", "numpy", "scipy", "pandas", "yaml",
           "jsonschema", "pymatgen.core", "pymatgen.analysis.phase_diagram", "spglib", "ase", "orb_models.forcefield.pretrained"):
    try:
        __import__(_m)
    except Exception as exc:  # noqa: BLE001
        _bad.append(f"{_m} ({type(exc).__name__}: {exc})")
if _bad:
    sys.exit("gpu_check: cannot import " + "; ".join(_bad) + ". Make the wheels where PyPI is reachable "
             "(bench/gpu_check.sh --fetch-wheels) and carry .whl/")
OUT = Path(os.environ["OUT"])
sys.path.insert(0, str(Path("bench").resolve()))
RESULTS = {"dry": DRY}
# The paper's GPU figures (arXiv 2504.02367): Sec. 3.2 sampling 5000 in 276 s on one
# A100; App. A pretraining 1000 GPU-h for 5500 epochs of ~1.04 M rows at 8000 over 8
# A100s (130 steps per epoch), RL 12-24 GPU-h for 100-200 steps of 1000 on 2 A100s.
PAPER_SAMPLES_PER_S = 5000 / 276
PAPER_PRETRAIN_STEP_S = 1000 * 3600 / (5500 * 130) / 8  # wall s per step, 1000 rows per A100
PAPER_PPO_STEP_GPU_S = 12 * 3600 / 100


def record(name, **kw):
    RESULTS[name] = kw
    print(f"[{name}] " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in kw.items()), flush=True)
    (OUT / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def part(fn):
    """Run one measurement; a failure is recorded and the next one still runs."""
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        record(fn.__name__ + "_failed", error=f"{type(exc).__name__}: {str(exc)[:500]}")
    print(f"-- {fn.__name__}: {time.perf_counter() - t0:.0f} s", flush=True)


def peak_memory():
    jax_peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0)
    torch_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    return dict(jax_peak_gib=jax_peak / 2**30, torch_peak_gib=torch_peak / 2**30)


from crystalrl.model import sampler as sp  # noqa: E402
from crystalrl.model.config import ModelConfig  # noqa: E402
from crystalrl.model.store import build_model  # noqa: E402

TINY = dict(num_layers=1, num_heads=2, key_size=8, model_size=16, embed_size=8, h0_size=16)
CFG = ModelConfig.from_dict(dict(dropout_rate=0.0, attn_dropout=0.0, **(TINY if DRY else {})))
MODEL = build_model(CFG)
if os.environ.get("GPU_CHECK_CKPT"):
    from crystalrl.model.haiku_import import import_into
    from crystalrl.model.published import read_checkpoint
    import_into(MODEL, read_checkpoint(os.environ["GPU_CHECK_CKPT"]).params)
cap_torch_memory()
dev = jax.devices()[0]
record("backends", **found_backends({"jax", "torch"}), jax_devices=len(jax.devices()),
       torch_devices=torch.cuda.device_count(), xla_mem_fraction=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"))
record("machine", jax=jax.__version__, jax_device=f"{dev.platform} {dev.device_kind}",
       torch=torch.__version__, torch_cuda=torch.cuda.is_available(),
       weights=os.environ.get("GPU_CHECK_CKPT", "random"),
       model_params=int(sum(x.size for x in jax.tree.leaves(nnx.state(MODEL, nnx.Param)))))
RNG = np.random.default_rng(0)
G_ALL = RNG.integers(1, 231, size=16 if DRY else 10_000).astype(np.int32)  # uniform: no data here
STATE = {}


def sampler():
    for B in ((8, 16) if DRY else (1000, 10_000)):
        for chunk in (None, min(B, 4 if DRY else 2500)):
            s = sp.sample(MODEL, jax.random.key(B), G_ALL[:B], chunk_size=chunk)
            W = np.asarray(s.W)
            record(f"sample_b{B}_chunk{chunk or sp.chunk_rows(CFG)}", samples_per_s=B / s.seconds,
                   seconds=s.seconds, compile_s=s.compile_seconds, mean_sites=float((W > 0).sum(1).mean()),
                   vs_paper_a100=B / s.seconds / PAPER_SAMPLES_PER_S, **peak_memory())
            STATE["batch"] = s
    from bench_sample import _baseline
    B = 4 if DRY else 1000
    with jax.enable_x64(True):
        graphdef, state = nnx.split(MODEL)
        state = jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
        g = jnp.asarray(G_ALL[:B])
        t0 = time.perf_counter()
        jax.block_until_ready(_baseline(graphdef, state, jax.random.key(1), g))
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(_baseline(graphdef, state, jax.random.key(2), g))
        t = time.perf_counter() - t0
    ours = RESULTS.get(f"sample_b{8 if DRY else 1000}_chunk{4 if DRY else 1000}", {}).get("samples_per_s", np.nan)
    record("sample_public_recipe", batch=B, samples_per_s=B / t, compile_s=t_first - t,
           ours_vs_public=ours / (B / t), public_vs_paper_a100=B / t / PAPER_SAMPLES_PER_S)


def orb_ppo_step():
    from orb_models.forcefield import pretrained
    from orb_models.forcefield.atomic_system import SystemConfig
    import pymatgen.core
    from pymatgen.core import Structure

    from crystalrl.hull import load_reference
    from crystalrl.mlip import MLIPConfig, load_mlip
    from crystalrl.model.store import params_of
    from crystalrl.rewards import ehull_reward
    from crystalrl.rl.ppo import _logp_fn, _make_update
    from crystalrl.train.loop import data_mesh, make_optimizer

    device = "cpu" if DRY else "cuda"
    weights = OUT / "orb-v2-random.ckpt"
    torch.save(pretrained.orb_v2_architecture(system_config=SystemConfig(radius=6.0, max_num_neighbors=20)).state_dict(),
               weights)
    mlip = load_mlip(MLIPConfig.from_dict(dict(backend="orb", model="orb-v2", weights_path=str(weights), device=device)))
    weights.unlink()
    hull = load_reference("mp_bundled")
    reward = ehull_reward(mlip, hull, clip=10.0)
    # Orb alone on real structures (pymatgen's bundled ones, <= 50 atoms), batched vs one ASE call each
    sdir = Path(pymatgen.core.__file__).parents[1] / "util" / "structures"
    real = [s for s in (Structure.from_file(p) for p in sorted(sdir.glob("*.json"))) if len(s) <= 50]
    reps = (real * 100)[:20 if DRY else 1000]
    mlip.predict(reps[:8], properties=("energy",))
    t0 = time.perf_counter()
    mlip.predict(reps, properties=("energy",))
    t_batch = (time.perf_counter() - t0) / len(reps)
    calc = mlip.calculator()
    from pymatgen.io.ase import AseAtomsAdaptor
    n_ase = 5 if DRY else 100
    t0 = time.perf_counter()
    for s in reps[:n_ase]:
        a = AseAtomsAdaptor.get_atoms(s)
        a.calc = calc
        a.get_potential_energy()
    t_ase = (time.perf_counter() - t0) / n_ase
    record("orb_energies", structures=len(reps), mean_atoms=float(np.mean([len(s) for s in reps])),
           batched_ms=1e3 * t_batch, ase_per_structure_ms=1e3 * t_ase, batched_vs_ase=t_ase / t_batch)

    graphdef, params0, rest = nnx.split(MODEL, nnx.Param, ...)
    tx, _ = make_optimizer(1e-5, 0.0, 1.0)
    update, logp = _make_update(graphdef, rest, tx, 0.1, 0.2, data_mesh(jax.devices()[:1])), _logp_fn(graphdef, rest, data_mesh(jax.devices()[:1]))
    ref = params_of(MODEL)
    state = dict(params=nnx.to_pure_dict(params0))
    state["opt_state"] = tx.init(state["params"])
    B = 8 if DRY else 1000
    for step in range(2):  # the first step compiles
        t = {}
        t0 = time.perf_counter()
        s = sp.sample(MODEL, jax.random.key(10 + step), G_ALL[:B])
        t["sample"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        structures = s.decode()[0]
        t["decode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rr = reward(structures)
        t["reward"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        batch = {k: jnp.asarray(v) for k, v in s.tokens().items()}
        old = logp(state["params"], batch)
        ref_lp = logp(ref, batch)
        adv = jnp.asarray(rr.reward - rr.reward.mean(), old.dtype)
        for _ in range(3):
            state, aux = update(state, batch, old, ref_lp, adv)
        jax.block_until_ready(aux)
        t["update"] = time.perf_counter() - t0
    total = sum(t.values())
    # random weights give mostly invalid samples that skip the MLIP: price a batch of real ones too
    all_scored = total - t["reward"] + B * RESULTS["orb_energies"]["batched_ms"] / 1e3
    record("ppo_step", batch=B, scored=int(np.isfinite(rr.extras["e_hull"]).sum()), total_s=total,
           total_s_if_all_orb_scored=all_scored,
           **{f"{k}_s": v for k, v in t.items()}, **{f"{k}_share": v / total for k, v in t.items()},
           paper_gpu_s_per_step=PAPER_PPO_STEP_GPU_S, **peak_memory())


def pretrain_step():
    from crystalrl.train.data import clean_arrays
    from crystalrl.train.loop import fresh_train_step

    cfg = ModelConfig.from_dict(dict(TINY if DRY else {}))  # dropout 0.1, as pretraining
    s = STATE.get("batch") or sp.sample(MODEL, jax.random.key(3), G_ALL[:16 if DRY else 1000])
    arrays, _ = clean_arrays(s.tokens(), n_max=cfg.n_max, atom_types=cfg.atom_types, wyck_types=cfg.wyck_types)
    fs = fresh_train_step(cfg)
    state, rest, train_step, data_sh = fs.state, fs.rest, fs.train_step, fs.data_sh
    n = len(arrays["G"])
    for B in ((16, 8) if DRY else (8000, 1000)):
        batch = jax.device_put({k: v[np.arange(B) % n] for k, v in arrays.items()}, data_sh)
        try:
            t0 = time.perf_counter()
            state, out = train_step(state, rest, batch, np.int32(0))
            jax.block_until_ready(out)
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(1, 4):
                state, out = train_step(state, rest, batch, np.int32(i))
            jax.block_until_ready(out)
            t = (time.perf_counter() - t0) / 3
        except Exception as exc:  # noqa: BLE001 - out of memory is an answer here
            record(f"pretrain_b{B}", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            continue
        record(f"pretrain_b{B}", step_s=t, compile_s=t_first - t, samples_per_s=B / t,
               paper_step_s_1000_per_a100=PAPER_PRETRAIN_STEP_S,
               paper_vs_ours_per_sample=(PAPER_PRETRAIN_STEP_S / 1000) / (t / B), **peak_memory())


PARTS = {f.__name__: f for f in (sampler, orb_ppo_step, pretrain_step)}
for name in os.environ.get("GPU_CHECK_PARTS", ",".join(PARTS)).split(","):
    part(PARTS[name.strip()])
if DRY:  # what the wheel list (FETCH) must cover: every distribution these parts imported
    from importlib.metadata import packages_distributions
    dists = packages_distributions()
    record("imported_distributions", names=sorted({d for m, mod in list(sys.modules.items())
                                                   if "." not in m and mod is not None for d in dists.get(m, [])}))
print(json.dumps(RESULTS, indent=1, default=str))
EOF

timeout "${GPU_CHECK_TIMEOUT:-840}" "$PY" "$SCRIPT"

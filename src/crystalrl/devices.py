"""Which devices a job runs on: never silently on the CPU, one GPU memory policy.

A job that asked Slurm for a GPU, or any job under `runtime.device: cuda`, checks at its
start that JAX and torch (the frameworks its stage uses) see a GPU, and stops within
seconds otherwise, naming the backend it found and the install that fixes it. A CPU-only
wheel of either framework runs everything on the CPU without a word, which on a GPU
node turns a two-day job into weeks. `runtime.device: cpu` says CPU is intended (the
demo, tests, the Slurm test cluster's dummy GPU).

Processes that hold JAX and torch on one GPU (PPO and evaluation: a JAX model and a
torch MLIP) split its memory by fixed fractions, set before either framework allocates:
JAX through XLA_PYTHON_CLIENT_MEM_FRACTION, torch with `set_per_process_memory_fraction`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

# How common.smk hands the `runtime` section to jobs (jobs inherit the environment, locally
# and through Slurm's --export=ALL); not params, so changing them reruns nothing.
ENV_DEVICE = "CRYSTALRL_DEVICE"
ENV_JAX_FRACTION = "CRYSTALRL_JAX_MEMORY_FRACTION"
ENV_TORCH_FRACTION = "CRYSTALRL_TORCH_MEMORY_FRACTION"

#: The GPU wheels of the pinned versions (docs/cluster.md).
GPU_INSTALL = ("pip install 'jax[cuda12]==0.10.2' && pip install torch==2.13.0 "
               "--index-url https://download.pytorch.org/whl/cu126")


class NoGPUError(RuntimeError):
    """A job that must run on a GPU found none."""


def runtime_env(runtime: Mapping) -> dict[str, str]:
    """The environment variables that carry config section `runtime` to the jobs."""
    return {ENV_DEVICE: str(runtime["device"]), ENV_JAX_FRACTION: str(runtime["jax_memory_fraction"]),
            ENV_TORCH_FRACTION: str(runtime["torch_memory_fraction"])}


def gpu_requested(resources: Mapping) -> bool:
    """Whether a rule's resources ask for a GPU (`gpu: n` or `gres: gpu...`)."""
    return bool(resources.get("gpu")) or str(resources.get("gres", "")).startswith("gpu")


def must_use_gpu(resources: Mapping, env: Mapping[str, str] = os.environ) -> bool:
    """`runtime.device: cuda`, or `auto` in a Slurm job whose rule asked for a GPU."""
    device = env.get(ENV_DEVICE, "auto")
    return device == "cuda" or (device == "auto" and "SLURM_JOB_ID" in env and gpu_requested(resources))


def found_backends(uses: set[str]) -> dict[str, str]:
    """What each framework in `uses` ("jax", "torch") runs on: "gpu", or what it found instead."""
    out = {}
    if "jax" in uses:
        import jax

        backend = jax.default_backend()
        out["jax"] = "gpu" if backend in ("gpu", "cuda", "rocm") else f"{backend} ({jax.__version__}, devices {jax.devices()})"
    if "torch" in uses:
        import torch

        out["torch"] = ("gpu" if torch.cuda.is_available() else
                        f"cpu (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})")
    return out


def check_devices(stage: str, uses: set[str], resources: Mapping, env: Mapping[str, str] = os.environ) -> None:
    """NoGPUError when the job must use a GPU (`must_use_gpu`) and a framework of `uses` has none."""
    if not uses or not must_use_gpu(resources, env):
        return
    missing = {k: v for k, v in found_backends(uses).items() if v != "gpu"}
    if missing:
        why = "runtime.device is cuda" if env.get(ENV_DEVICE) == "cuda" else "its Slurm job asked for a GPU"
        raise NoGPUError(
            f"stage {stage} must run on a GPU ({why}) but " + "; ".join(f"{k} runs on {v}" for k, v in missing.items())
            + f". Install the GPU builds in the job's environment: {GPU_INSTALL} (docs/cluster.md). "
            "To run on the CPU on purpose, set runtime.device: cpu.")


def apply_memory_policy(env: Mapping[str, str] = os.environ) -> None:
    """Cap JAX's share of each GPU for a process that also runs torch; call before JAX starts."""
    fraction = env.get(ENV_JAX_FRACTION)
    if fraction:
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = fraction
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # take it as needed, up to the cap


def cap_torch_memory(env: Mapping[str, str] = os.environ) -> None:
    """Cap torch's share of each visible GPU (its caching allocator); nothing without a GPU."""
    fraction = env.get(ENV_TORCH_FRACTION)
    if not fraction:
        return
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(float(fraction), i)


def release_torch_cache() -> None:
    """Hand torch's cached GPU blocks back (between the reward's scoring and JAX's update)."""
    import sys

    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

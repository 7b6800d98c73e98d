"""Batched FoM prediction vs one structure per call (the public reward code's way).

Uses randomly initialised models of the workflow's default sizes saved as matgl
directories (speed does not depend on the weights) and real Alexandria structures.
Both sides run in the same process, so machine contention affects both alike.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_dielectric.py [n_structures]
"""
from __future__ import annotations

import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from pymatgen.core import Structure

from crystalrl.dielectric import DielectricPredictor, merged_config

DEFAULTS = merged_config({})  # the schema's defaults
from crystalrl.dielectric.train import save_model_dir

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(n: int = 128) -> None:
    from matgl.config import DEFAULT_ELEMENTS
    from matgl.models import M3GNet, MEGNet

    torch.set_num_threads(1)
    cifs = []
    with tarfile.open(SHARED / "alexandria_sample" / "cifs.tar.gz") as tar:
        for m in tar.getmembers():
            if m.name.endswith(".cif") and len(cifs) < n:
                cifs.append(tar.extractfile(m).read().decode())
    structures = [Structure.from_str(c, fmt="cif") for c in cifs]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        save_model_dir(M3GNet(element_types=DEFAULT_ELEMENTS, ntargets=6, **DEFAULTS["model"]),
                       Path(tmp, "eps"), {"target": "total"})
        save_model_dir(MEGNet(element_types=DEFAULT_ELEMENTS, include_state=True,
                              **DEFAULTS["band_gap"]["model"]), Path(tmp, "gap"), {})
        predictor = DielectricPredictor(Path(tmp, "eps"), Path(tmp, "gap"))
        predictor.predict(structures[:4])  # warm-up
        timings = {}
        for bs in (1, 64):
            t0 = time.perf_counter()
            predictor.predict(structures, batch_size=bs)
            timings[bs] = time.perf_counter() - t0
    print(f"{len(structures)} Alexandria structures, default model sizes, 1 thread")
    print(f"one per call : {timings[1]:.2f} s ({len(structures) / timings[1]:.1f} structures/s)")
    print(f"batch of 64  : {timings[64]:.2f} s ({len(structures) / timings[64]:.1f} structures/s)")
    print(f"speed-up     : {timings[1] / timings[64]:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 128)

"""The Frechet derivative of expm that TorchSim 0.3.0's Frechet cell filter asks for, once per structure.

After every step the filter turns the virial into cell forces through L(A, E), the Frechet
derivative of expm at A = log(deformation gradient), along the 9 unit directions E, one
`torch_sim.math.expm_frechet` call per structure and direction, each a dozen small torch
ops: 15% of a batched CHGNet relaxation on 2 cores in a cProfile run, and 1.25x per step
with this module (bench/bench_frechet.py). TorchSim batches them from 0.5 on (its PR #439,
Python >= 3.12).

Here, inside `memoized_expm_frechet()`, the first call for a matrix A computes all 9 unit
derivatives in one block-matrix exponential,

    expm([[A, E], [0, A]]) = [[expm(A), L(A, E)], [0, expm(A)]]   (Higham 2008, eq. 3.16),

and every call for that A is answered by linearity, L(A, E) = sum_ij E_ij L(A, e_ij),
so the value is the same for any E, to rounding (tests/test_relax.py).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def expm_frechet_units(a_33: torch.Tensor) -> torch.Tensor:
    """L(A, e_ij) for the 9 unit matrices e_ij, in row-major order (9, 3, 3)."""
    e_933 = torch.eye(9, dtype=a_33.dtype, device=a_33.device).reshape(9, 3, 3)
    m_966 = a_33.new_zeros(9, 6, 6)
    m_966[:, :3, :3] = a_33
    m_966[:, 3:, 3:] = a_33
    m_966[:, :3, 3:] = e_933
    return torch.linalg.matrix_exp(m_966)[:, :3, 3:]


@contextlib.contextmanager
def memoized_expm_frechet() -> Iterator[None]:
    """Within the block, TorchSim's `expm_frechet(A, E, compute_expm=False)` on 3x3 matrices
    reuses the 9 unit derivatives of the last A it saw; anything else goes to TorchSim's own."""
    import torch_sim.math as tsm

    original = tsm.expm_frechet
    last: dict = {}

    def expm_frechet(A, E, compute_expm=True, **kwargs):
        if compute_expm or kwargs or A.shape != (3, 3) or E.shape != (3, 3):
            return original(A, E, compute_expm=compute_expm, **kwargs)
        key = (A.dtype, A.device, A.detach().cpu().numpy().tobytes())
        if last.get("key") != key:
            last.update(key=key, units_933=expm_frechet_units(A.detach()))
        return (E.reshape(9, 1, 1) * last["units_933"]).sum(0)

    tsm.expm_frechet = expm_frechet
    try:
        yield
    finally:
        tsm.expm_frechet = original

"""Benchmark: e_above_hull of 1,000 structures over 100 chemical systems, cached vs per structure.

Reference: the real MP-20 formation-energy hull (`mp20_formation_energies.csv.gz`,
36,769 entries, a stand-in for the larger Alexandria hull). Queries: 100 chemical
systems of 3-4 elements drawn (seeded) from the reference, 10 compositions each
taken from that system's entries, energies shifted by -0.05..+0.2 eV/atom ("given
their energies": the MLIP and MP2020 steps are the same on both sides and left out).

- cached: `HullReference.e_above_hull` (one PhaseDiagram per chemical system).
- baseline A, the public CrystalFormer recipe (`ehull.forward_fn`): per structure,
  filter the whole reference list to entries whose elements are a subset, build a
  PhaseDiagram, place the entry. Timed on --baseline-n structures, scaled to all.
- baseline B, build only: per structure, a PhaseDiagram from the pre-indexed
  entries (the filtering cost removed), then place the entry; on the same subset.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_hull.py [--n-systems 100] [--per-system 10]
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram

from crystalrl.hull import HullReference, load_reference

SHARED = Path(os.environ.get("CRYSTALRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def make_queries(ref: HullReference, n_systems: int, per_system: int, seed: int):
    rng = np.random.default_rng(seed)
    systems = sorted((k for k, v in ref.by_chemsys.items() if len(k) in (3, 4) and len(v) >= 2),
                     key=lambda k: "-".join(sorted(k)))
    pick = rng.choice(len(systems), size=n_systems, replace=False)
    queries = []
    for j in pick:
        ents = ref.by_chemsys[systems[j]]
        for e in rng.choice(len(ents), size=per_system, replace=True):
            c = ents[e].composition
            queries.append(PDEntry(c, ents[e].energy + rng.uniform(-0.05, 0.2) * c.num_atoms))
    rng.shuffle(queries)
    return queries


def crystalformer_recipe(all_entries, q):
    """Per structure: scan the whole reference, build a PD, place the entry."""
    els = {el.symbol for el in q.composition.elements}
    sub = [e for e in all_entries if {el.symbol for el in e.composition.elements} <= els]
    return PhaseDiagram(sub).get_decomp_and_e_above_hull(q, allow_negative=True, check_stable=False)[1]


def build_only(ref: HullReference, q):
    pd_ = PhaseDiagram(ref.entries_for([el.symbol for el in q.composition.elements]))
    return pd_.get_decomp_and_e_above_hull(q, allow_negative=True, check_stable=False)[1]


def fresh_copy(entries):
    """New entry and Composition objects: pymatgen caches derived values on them
    (reduced compositions, fractions), which would favour whichever path runs second."""
    from pymatgen.core import Composition

    return [PDEntry(Composition(e.composition.as_dict()), e.energy, name=e.name) for e in entries]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-systems", type=int, default=100)
    ap.add_argument("--per-system", type=int, default=10)
    ap.add_argument("--baseline-n", type=int, default=100, help="structures timed for the baselines")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    t0 = time.perf_counter()
    ref = load_reference(SHARED / "data" / "mp20" / "mp20_formation_energies.csv.gz")
    print(f"reference: {ref!r} loaded in {time.perf_counter() - t0:.1f} s")
    queries = make_queries(ref, args.n_systems, args.per_system, args.seed)
    n = len(queries)
    all_entries = [e for v in ref.by_chemsys.values() for e in v]

    fresh = HullReference(fresh_copy(all_entries), ref.energy_kind, "fresh")
    t0 = time.perf_counter()
    eh, status = fresh.e_above_hull(fresh_copy(queries))
    t_cached = time.perf_counter() - t0
    assert set(status) == {"ok"}, set(status)

    sub = np.random.default_rng(args.seed + 1).choice(n, size=min(args.baseline_n, n), replace=False)
    ref_a, q_a = fresh_copy(all_entries), fresh_copy(queries)
    t0 = time.perf_counter()
    eh_a = [crystalformer_recipe(ref_a, q_a[i]) for i in sub]
    t_a = (time.perf_counter() - t0) / len(sub) * n
    ref_b, q_b = HullReference(fresh_copy(all_entries), ref.energy_kind, "b"), fresh_copy(queries)
    t0 = time.perf_counter()
    eh_b = [build_only(ref_b, q_b[i]) for i in sub]
    t_b = (time.perf_counter() - t0) / len(sub) * n
    err = max(np.max(np.abs(np.array(eh_a) - eh[sub])), np.max(np.abs(np.array(eh_b) - eh[sub])))

    print(f"{n} structures over {args.n_systems} chemical systems; "
          f"{len(fresh._pd_cache)} phase diagrams built by the cached path")
    print(f"cached (one PD per chemical system): {t_cached:8.2f} s")
    print(f"baseline A, CrystalFormer recipe (scan reference + PD per structure): "
          f"{t_a:8.2f} s (timed on {len(sub)}, scaled to {n})")
    print(f"baseline B, PD per structure from the indexed reference:            "
          f"{t_b:8.2f} s (timed on {len(sub)}, scaled to {n})")
    print(f"max |e_hull difference| cached vs baselines: {err:.2e} eV/atom")
    print(f"ratio cached / baseline A = {t_cached / t_a:.4f}  (target < 0.10)")
    print(f"ratio cached / baseline B = {t_cached / t_b:.4f}  "
          f"(floor {args.n_systems / n:.2f}: the cached path still builds one PD per system)")


if __name__ == "__main__":
    main()

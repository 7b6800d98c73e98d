"""Novelty of 1,000 samples against a 100,000-structure reference, vs exhaustive StructureMatcher.

The reference is synthesised from the 1,980 real Alexandria CIFs by element
substitution within periodic-table groups (done on the CIF text, so building it is
cheap); its `formula` and `spacegroup` columns are filled as in `data/train.parquet`.
Samples: 400 perturbed copies of reference rows (true matches), 300 strongly strained
reference rows (same composition, no match) and 300 with a foreign element.
The exhaustive baseline (every sample `fit` against every parsed reference CIF) is
timed on a random subset of pairs and CIFs and extrapolated to the full size.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_novelty.py [--n-ref 100000] [--n-samples 1000]
"""
from __future__ import annotations

import argparse
import re
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Element, Structure

from crystalrl.config import section
from crystalrl.evaluate.matching import NoveltyIndex

DEFAULT_MATCHER = section("evaluate")["matcher"]  # the schema's defaults (pymatgen's own)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alexandria_sample"
_TOKEN = re.compile(r"[A-Z][a-z]?")


def _family(el: str) -> list[str]:
    """Same periodic-table group, within two rows, stable non-noble elements (Z <= 83)."""
    e = Element(el)
    out = []
    for z in range(1, 84):
        o = Element.from_Z(z)
        if o.symbol != el and o.group == e.group and abs(o.row - e.row) <= 2 and not o.is_noble_gas:
            out.append(o.symbol)
    return out


def substitute_cif(cif: str, mapping: dict[str, str]) -> str:
    """Rename elements in a pymatgen P1 CIF (header formulas and atom-site rows)."""
    out = []
    sub = lambda m: mapping.get(m.group(0), m.group(0))  # noqa: E731
    for line in cif.splitlines():
        if line.startswith(("data_", "_chemical_formula_structural", "_chemical_formula_sum")):
            head, _, value = line.partition(" ") if not line.startswith("data_") else ("data_", "", line[5:])
            line = head + (" " if head != "data_" else "") + _TOKEN.sub(sub, value)
        else:
            tok = line.split()
            if len(tok) == 7 and tok[0] in mapping and tok[1].startswith(tok[0]):
                new = mapping[tok[0]]
                line = f"  {new}  {new}{tok[1][len(tok[0]):]}  " + "  ".join(tok[2:])
        out.append(line)
    return "\n".join(out) + "\n"


def build_reference(n_ref: int, rng: np.random.Generator) -> pd.DataFrame:
    index = pd.read_csv(SHARED / "index.csv")
    with tarfile.open(SHARED / "cifs.tar.gz") as tar:
        texts = {m.name.split("/")[-1]: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
    families: dict[str, list[str]] = {}
    rows, seen = [], set()
    per_base = int(np.ceil(1.4 * n_ref / len(index)))  # some bases allow few substitutions
    for _, r in index.iterrows():
        cif, els = texts[r["file"]], sorted(set(_TOKEN.findall(r["formula"])))
        for el in els:
            if el not in families:
                families[el] = _family(el)
        n_kept = 0
        for attempt in range(4 * per_base):
            if attempt == 0:
                mapping = {}
            else:
                mapping = {el: (rng.choice(families[el]) if families[el] and rng.random() < 0.7 else el)
                           for el in els}
                if len(set(mapping.values())) < len(els):
                    continue
            key = (r["file"], tuple(sorted(mapping.items())))
            if key in seen:
                continue
            seen.add(key)
            rows.append((f"{r['material_id']}-{len(seen)}", substitute_cif(cif, mapping),
                         _TOKEN.sub(lambda m: mapping.get(m.group(0), m.group(0)), r["formula"]),
                         int(r["spg_symprec0p1"])))
            n_kept += 1
            if n_kept >= per_base:
                break
    df = pd.DataFrame(rows, columns=["id", "cif", "formula", "spacegroup"])
    return df.sample(n=min(n_ref, len(df)), random_state=0).reset_index(drop=True)


def _parse(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


def build_samples(ref: pd.DataFrame, n: int, rng: np.random.Generator) -> tuple[list[Structure], np.ndarray]:
    """(samples, is_copy): 40% perturbed copies, 30% strained, 30% with a foreign element."""
    n_copy, n_strain = int(0.4 * n), int(0.3 * n)
    picks = rng.choice(len(ref), size=n, replace=False)
    out = []
    for k, i in enumerate(picks):
        s = _parse(ref["cif"].iloc[i])
        if k < n_copy:
            s.perturb(0.05)
            s.apply_strain(rng.uniform(-0.02, 0.02, size=3))
        elif k < n_copy + n_strain:
            s.apply_strain([0.45, -0.2, 0.0])
        else:
            el = s.composition.elements[0]
            s.replace_species({el: "Xe" if "Xe" not in s.composition else "Kr"})
        out.append(s)
    return out, np.arange(n) < n_copy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-ref", type=int, default=100_000)
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    t0 = time.perf_counter()
    ref = build_reference(args.n_ref, rng)
    samples, is_copy = build_samples(ref, args.n_samples, rng)
    print(f"setup: reference {len(ref)} rows ({ref['formula'].nunique()} formulas) from "
          f"{SHARED / 'cifs.tar.gz'}, {len(samples)} samples, {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    index = NoveltyIndex(ref, DEFAULT_MATCHER)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    novel = index.is_novel(samples, processes=args.processes)
    t_query = time.perf_counter() - t0
    t_ours = t_index + t_query
    print(f"grouped+lazy: index {t_index:.1f} s ({index.n_groups} groups) + is_novel {t_query:.1f} s "
          f"(processes={args.processes}, {index.n_parsed} reference CIFs parsed) = {t_ours:.1f} s")
    print(f"  perturbed copies found non-novel: {(~novel[is_copy]).sum()}/{is_copy.sum()}; "
          f"other samples novel: {novel[~is_copy].sum()}/{(~is_copy).sum()}")

    # exhaustive baseline on a measured subset: parse every reference CIF, fit every pair
    sm = StructureMatcher(**DEFAULT_MATCHER)
    sub = rng.choice(len(ref), size=100, replace=False)
    t0 = time.perf_counter()
    parsed = [_parse(ref["cif"].iloc[i]) for i in sub]
    t_parse = (time.perf_counter() - t0) / len(sub)
    pairs = [(parsed[rng.integers(len(parsed))], samples[rng.integers(len(samples))]) for _ in range(300)]
    t0 = time.perf_counter()
    for r, s in pairs:
        sm.fit(r, s)
    t_fit = (time.perf_counter() - t0) / len(pairs)
    n_r, n_s = len(ref), len(samples)
    t_exh = n_r * t_parse + n_r * n_s * t_fit
    print(f"exhaustive (extrapolated from 100 parses, 300 fits): {n_r} x {t_parse * 1e3:.2f} ms parse + "
          f"{n_r}x{n_s} x {t_fit * 1e3:.3f} ms fit = {t_exh:.0f} s")
    print(f"eager parse of the reference alone (what bucketing without lazy parsing pays): {n_r * t_parse:.0f} s")
    print(f"ratio exhaustive / grouped+lazy: {t_exh / t_ours:.0f}x; eager-parse-only / grouped+lazy: "
          f"{n_r * t_parse / t_ours:.1f}x; target < 120 s: {'met' if t_ours < 120 else 'MISSED'}")


if __name__ == "__main__":
    main()

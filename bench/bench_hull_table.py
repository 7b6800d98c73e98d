"""The hull table at Alexandria's size: load time, memory and e_hull queries, lazy vs eager.

Alexandria's convex hull has hundreds of thousands of entries; every relax, evaluate and
PPO job loads it. The workflow converts it once (`prepare_hull`) to a Parquet table.
This builds such a table of `--entries` (default 520,000) formation-energy entries from
the real MP-20 hull (36,681 compositions, ../shared/data/mp20) by element substitution
(each copy maps the elements through a seeded permutation), and times, each in a fresh
process:

- lazy (what jobs do now): `load_reference(table)`, columns indexed by chemical system,
  entries built for the systems a query needs;
- eager (before): every row made a PDEntry at load, as `_read_table` did.

Then 1,000 queries (10 compositions in each of 100 ternary/quaternary systems of the
table, energies 0-0.2 eV/atom above their hull) are placed on both; results must agree.

    python bench/bench_hull_table.py [--entries 520000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(os.environ.get("CRYSTALRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np, pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Composition
from crystalrl.hull import HullReference, load_reference
t_import = time.perf_counter() - t0
path, mode, qpath = sys.argv[1:4]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if mode == "lazy":
    ref = load_reference(path)
else:  # the table as _read_table read it before: every row a PDEntry at load
    df = pd.read_parquet(path)
    ent = df[df["role"] == "entry"]
    ref = HullReference([PDEntry(Composition(f), float(e), name=str(n))
                         for n, f, e in zip(ent["name"], ent["formula"], ent["energy"])], "formation", "eager")
t_load = time.perf_counter() - t0
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
q = pd.read_parquet(qpath)
queries = [PDEntry(Composition(f), float(e)) for f, e in zip(q["formula"], q["energy"])]
t0 = time.perf_counter()
eh, status = ref.e_above_hull(queries)
t_query = time.perf_counter() - t0
print(json.dumps(dict(load_s=t_load, query_s=t_query, rss_load_mib=(rss1 - rss0) / 1024, peak_mib=resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024, n=len(ref), e_hull=[None if not np.isfinite(x) else float(x) for x in eh],
    ok=sum(s == "ok" for s in status))))
"""


def build_table(n_entries: int, folder: Path) -> tuple[Path, Path]:
    from pymatgen.core import Composition, Element

    from crystalrl.hull import load_reference

    mp = load_reference(SHARED / "data" / "mp20" / "mp20_formation_energies.csv.gz")
    base = [e for v in mp.by_chemsys.values() for e in v if len(e.composition.elements) > 1]
    elements = sorted({el for e in base for el in e.composition.elements}, key=lambda el: el.Z)
    rng = np.random.default_rng(0)
    rows = []
    copy = 0
    while len(rows) < n_entries:
        perm = dict(zip(elements, rng.permutation(elements))) if copy else {el: el for el in elements}
        for e in base:
            comp = Composition({perm[el]: n for el, n in e.composition.items()})
            rows.append((f"syn-{copy}-{len(rows)}", comp.formula, float(e.energy), "-".join(sorted(el.symbol for el in comp))))
            if len(rows) >= n_entries:
                break
        copy += 1
    syms = sorted({s for r in rows for s in r[3].split("-")}, key=lambda s: Element(s).Z)
    rows += [(f"{s} (element, 0)", s, 0.0, s) for s in syms]
    df = pd.DataFrame(rows, columns=["name", "formula", "energy", "chemsys"])
    df["role"], df["energy_kind"] = "entry", "formation"
    table = folder / "reference.parquet"
    df.to_parquet(table, index=False)
    # queries: 100 ternary/quaternary systems, 10 compositions each, 0..0.2 eV/atom above an entry
    multi = df[df["chemsys"].str.count("-").isin([2, 3])]
    systems = rng.choice(multi["chemsys"].unique(), size=100, replace=False)
    q = []
    for sysname in systems:
        pick = multi[multi["chemsys"] == sysname].sample(10, replace=True, random_state=int(rng.integers(1 << 30)))
        for f, e in zip(pick["formula"], pick["energy"]):
            n = Composition(f).num_atoms
            q.append((f, e + n * rng.uniform(0.0, 0.2)))
    qpath = folder / "queries.parquet"
    pd.DataFrame(q, columns=["formula", "energy"]).to_parquet(qpath, index=False)
    return table, qpath


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=520_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        table, qpath = build_table(a.entries, Path(tmp))
        print(f"synthetic table: {a.entries} entries from MP-20 by element substitution, "
              f"{table.stat().st_size / 2**20:.0f} MiB Parquet, built in {time.perf_counter() - t0:.0f} s")
        res = {}
        for mode in ("eager", "lazy"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(table), mode, str(qpath)], capture_output=True,
                                 text=True, check=True)
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        load = os.getloadavg()[0]
        print(f"1,000 e_hull queries in 100 systems; each path in a fresh process; load average {load:.1f}")
        for mode, r in res.items():
            print(f"  {mode:5s}: load {r['load_s']:7.2f} s (+{r['rss_load_mib']:6.0f} MiB), queries {r['query_s']:6.2f} s "
                  f"({1000 / r['query_s']:6.0f}/s), load + queries {r['load_s'] + r['query_s']:7.2f} s, peak RSS "
                  f"{r['peak_mib']:.0f} MiB, {r['ok']} placed")
        e, l = res["eager"], res["lazy"]
        same = np.allclose(np.array(e["e_hull"], float), np.array(l["e_hull"], float), equal_nan=True, atol=1e-9)
        print(f"speed-up lazy / eager: load {e['load_s'] / l['load_s']:.1f}x, load + 1,000 queries "
              f"{(e['load_s'] + e['query_s']) / (l['load_s'] + l['query_s']):.1f}x; peak RSS "
              f"{e['peak_mib'] / l['peak_mib']:.2f}x; e_hull equal: {same}")


if __name__ == "__main__":
    main()

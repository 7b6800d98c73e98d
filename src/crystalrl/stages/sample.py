"""Stage `sample`: a model directory -> samples/{model}/{set}.parquet (schema: docs/artifacts.md).

params: sample (this set's settings: n_samples, spacegroups, batch_size, temperature,
top_p, seed, elements, composition_bias, and for a named generation maybe a prototype),
model_name; inputs: model, train_tokens; outputs: samples.
Rows never disappear: a non-physical lattice gets status `invalid_lattice` and a failed
decode `decode_failed: <reason>` (cif null). `seconds` is each sample's share of its
batch's sampling time, JIT compilation excluded (logged apart), so S.U.N. per second
treats the first model of a job like the others.
"""
from __future__ import annotations

import jax
import numpy as np
import pandas as pd

from crystalrl.io import write_parquet_atomic
from crystalrl.model.condition import atom_bias, atom_mask
from crystalrl.model.prototype import Prototype
from crystalrl.model.sampler import SampleBatch, sample
from crystalrl.model.store import load_model
from crystalrl.spacegroups import sample_set_spacegroups


def run(inputs, outputs, params, log, threads=1) -> None:
    p, name = params["sample"], params["model_name"]
    model, cfg = load_model(inputs.model)
    train_G = pd.read_parquet(inputs.train_tokens, columns=["G"])["G"].to_numpy()
    G = sample_set_spacegroups(p["spacegroups"], int(p["n_samples"]), train_G, int(p["seed"]))
    mask, bias = atom_mask(p["elements"], cfg), atom_bias(p.get("composition_bias"), cfg)
    fixed = {}
    if p.get("prototype"):  # a named generation with fixed sites (config generate.<name>.prototype)
        w_fixed, mask, same_as = Prototype.from_dict(p["prototype"]).arrays(cfg, p["elements"])
        fixed = dict(wyckoff_fixed=w_fixed, same_element_as=same_as)
        log.info("%s: prototype %s", name, p["prototype"])
    bs, key = int(p["batch_size"]), jax.random.key(int(p["seed"]))
    parts, seconds = [], []
    for start in range(0, G.size, bs):
        batch = sample(model, jax.random.fold_in(key, start // bs), G[start:start + bs],
                       temperature=float(p["temperature"]), top_p=float(p["top_p"]), atom_mask=mask,
                       atom_bias=bias, **fixed)
        parts.append(batch)
        seconds.append(np.full(len(batch), batch.seconds / len(batch)))
        log.info("%s: sampled %d / %d (%.2f s, compile %.2f s)", name, start + len(batch), G.size,
                 batch.seconds, batch.compile_seconds)
    s = SampleBatch.concat(parts)
    structures, status = s.decode()
    B = len(s)
    df = pd.DataFrame({
        "sample_id": [f"{name}-{i:06d}" for i in range(B)],
        "G": s.G.astype(np.int64),
        "L": list(s.L.astype(np.float64)),
        "XYZ": list(s.XYZ.reshape(B, -1).astype(np.float64)),
        "A": list(s.A.astype(np.int64)), "W": list(s.W.astype(np.int64)),
        "cif": [None if st is None else st.to(fmt="cif") for st in structures],
        "logp": s.logp.astype(np.float64), "n_atoms": s.n_atoms.astype(np.int64),
        "status": status, "seconds": np.concatenate(seconds),
    })
    write_parquet_atomic(df, outputs.samples)
    log.info("%s: wrote %d samples (%d ok) to %s; sampling %.1f s, JIT compile %.1f s (not counted)",
             name, B, (df["status"] == "ok").sum(), outputs.samples, s.seconds, s.compile_seconds)

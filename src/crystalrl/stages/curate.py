"""Stage `curate`: a data source -> train/val/test/rejected Parquets (`crystalrl.data.curate`).

params: data (the `data` section), n_max (`model.n_max`); outputs: train, val, test, rejected.
"""
from __future__ import annotations

import itertools

from crystalrl.config import section
from crystalrl.data.curate import SPLITS, common_reasons, curate
from crystalrl.data.sources import read_source
from crystalrl.io import write_parquet_atomic


def run(inputs, outputs, params, log, threads=1) -> None:
    data = section("data", params["data"])
    rows = read_source(data["source"], data["path"])
    if data["limit"]:
        rows = itertools.islice(rows, data["limit"])  # quick runs on the first rows
    splits, rejected = curate(rows, max_atoms=data["max_atoms"], e_hull_max=data["e_hull_max"],
                              n_max=int(params["n_max"]), split=tuple(data["split"]), seed=data["seed"],
                              dedupe=data["dedupe"], split_by=data["split_by"], processes=threads, logger=log)
    counts = {name: len(splits[name]) for name in SPLITS}
    if not all(counts.values()):
        for reason, n in common_reasons(rejected["reason"]):
            log.error("rejected %d row(s): %s", n, reason)
        raise ValueError(
            f"data source {data['source']!r} ({data['path'] or 'built in'}{', first ' + str(data['limit']) + ' rows' if data['limit'] else ''}) "
            f"left {', '.join(f'{k} {v}' for k, v in counts.items())} rows after curation ({len(rejected)} rejected; "
            "the most common reasons are in this log): every split needs rows. Point data.path at more data, "
            "raise data.limit, or loosen data.e_hull_max / data.max_atoms.")
    for name in SPLITS:
        write_parquet_atomic(splits[name], getattr(outputs, name))
    write_parquet_atomic(rejected, outputs.rejected)

"""Stage `prepare_hull`: the downloaded hull file (Alexandria json.bz2) -> a compact Parquet table,
so every job loads it in seconds instead of minutes.

params: hull (section, as the user wrote it); inputs: source (the downloaded file); outputs: table.
"""
from __future__ import annotations

from crystalrl.hull import HullConfig, load_hull


def run(inputs, outputs, params, log, threads=1) -> None:
    ref = load_hull(HullConfig.from_dict(params["hull"]))
    ref.to_parquet(outputs.table)
    log.info("%s: %d entries -> %s", inputs.source, len(ref), outputs.table)

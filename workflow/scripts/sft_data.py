"""SFT training data: relaxed base samples that are stable after relaxation."""
import pandas as pd

from crystalrl.io import get_logger, write_parquet_atomic


def select_stable(relaxed: pd.DataFrame, e_hull_max: float) -> pd.DataFrame:
    """Relaxed structures with e_hull_final < e_hull_max, as (id, cif) rows to tokenize."""
    ok = relaxed["status"].eq("ok") & (relaxed["e_hull_final"] < e_hull_max)
    keep = relaxed.loc[ok, ["sample_id", "cif_relaxed"]]
    return pd.DataFrame({"id": keep["sample_id"].astype(str), "cif": keep["cif_relaxed"]})


def main(snakemake):
    log = get_logger("sft_data", snakemake.log[0])
    relaxed = pd.read_parquet(snakemake.input.relaxed)
    data = select_stable(relaxed, snakemake.params.e_hull_max)
    log.info("%d of %d relaxed samples have e_hull < %.3f eV/atom", len(data), len(relaxed),
             snakemake.params.e_hull_max)
    if data.empty:
        raise ValueError(f"{snakemake.input.relaxed}: no relaxed sample is stable "
                         f"(e_hull < {snakemake.params.e_hull_max}); nothing to fine-tune on")
    write_parquet_atomic(data, snakemake.output.data)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821

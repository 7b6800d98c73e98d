"""Rule `predict_dielectric`: band gap, dielectric constant and FoM of one model's samples."""
import numpy as np
import pandas as pd

from crystalrl.io import get_logger, set_threads, write_parquet_atomic


def predict_samples(samples: pd.DataFrame, evals: pd.DataFrame, predictor, spacegroups) -> pd.DataFrame:
    """FoM predictions of the samples in `spacegroups`, joined with their e_hull and novelty."""
    from pymatgen.core import Structure

    s = samples[samples["G"].isin(spacegroups)] if spacegroups else samples
    s = s[s["cif"].notna()]
    structures = [Structure.from_str(c, fmt="cif") for c in s["cif"]]
    pred = predictor.predict(structures)
    out = pd.DataFrame({"sample_id": s["sample_id"].to_numpy(), "spacegroup": s["G"].to_numpy(),
                        "formula": [st.composition.reduced_formula for st in structures],
                        "band_gap": pred["band_gap"], "eps": pred["eps"], "fom": pred["fom"],
                        "status": pred["status"].astype(str)})
    keep = [c for c in ("sample_id", "e_hull", "novel") if c in evals]
    return out.merge(evals[keep], on="sample_id", how="left")


def main(snakemake):
    set_threads(snakemake.threads)
    from crystalrl.dielectric import DielectricPredictor

    log = get_logger("predict_dielectric", snakemake.log[0])
    preds = predict_samples(pd.read_parquet(snakemake.input.samples), pd.read_parquet(snakemake.input.eval),
                            DielectricPredictor(snakemake.input.eps_model, snakemake.input.gap_model),
                            list(snakemake.params.spacegroups))
    log.info("%d samples, median FoM %.3f", len(preds), float(np.nanmedian(preds["fom"])) if len(preds) else np.nan)
    write_parquet_atomic(preds, snakemake.output.preds)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821

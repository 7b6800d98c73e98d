"""Rule script: runs stage `predict_dielectric` (crystalrl.stages.predict_dielectric) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("predict_dielectric", snakemake)  # noqa: F821

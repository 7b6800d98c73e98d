"""Rule script: runs stage `train_dielectric` (crystalrl.stages.train_dielectric) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("train_dielectric", snakemake)  # noqa: F821

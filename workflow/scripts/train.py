"""Rule script: runs stage `train` (crystalrl.stages.train) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("train", snakemake)  # noqa: F821

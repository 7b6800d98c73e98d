"""Rule script: runs stage `evaluate` (crystalrl.stages.evaluate) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("evaluate", snakemake)  # noqa: F821

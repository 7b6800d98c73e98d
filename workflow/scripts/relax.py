"""Rule script: runs stage `relax` (crystalrl.stages.relax) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("relax", snakemake)  # noqa: F821

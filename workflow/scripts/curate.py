"""Rule script: runs stage `curate` (crystalrl.stages.curate) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("curate", snakemake)  # noqa: F821

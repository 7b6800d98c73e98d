"""Rule script: runs stage `merge_relax` (crystalrl.stages.merge_relax) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("merge_relax", snakemake)  # noqa: F821

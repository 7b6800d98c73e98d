"""Rule script: runs stage `curate_shard` (crystalrl.stages.curate, run_shard) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("curate_shard", snakemake)  # noqa: F821

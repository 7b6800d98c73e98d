"""Rule script: runs stage `fetch_checkpoint` (crystalrl.stages.fetch_checkpoint) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("fetch_checkpoint", snakemake)  # noqa: F821

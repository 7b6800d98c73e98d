"""Rule script: runs stage `prepare_hull` (crystalrl.stages.prepare_hull) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("prepare_hull", snakemake)  # noqa: F821

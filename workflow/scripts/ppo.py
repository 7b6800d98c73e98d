"""Rule script: runs stage `ppo` (crystalrl.stages.ppo) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("ppo", snakemake)  # noqa: F821

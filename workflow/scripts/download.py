"""Rule script: runs stage `download` (crystalrl.stages.download) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("download", snakemake)  # noqa: F821

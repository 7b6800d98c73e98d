"""Rule script: runs stage `sun_table` (crystalrl.stages.sun_table) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("sun_table", snakemake)  # noqa: F821

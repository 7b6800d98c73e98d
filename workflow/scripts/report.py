"""Rule script: runs stage `report` (crystalrl.stages.report) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("report", snakemake)  # noqa: F821

"""Rule script: runs stage `report_dielectric` (crystalrl.stages.report_dielectric) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("report_dielectric", snakemake)  # noqa: F821

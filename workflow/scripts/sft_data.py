"""Rule script: runs stage `sft_data` (crystalrl.stages.sft_data) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("sft_data", snakemake)  # noqa: F821

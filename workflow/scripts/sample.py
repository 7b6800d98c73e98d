"""Rule script: runs stage `sample` (crystalrl.stages.sample) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("sample", snakemake)  # noqa: F821

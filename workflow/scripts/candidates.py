"""Rule script: runs stage `candidates` (crystalrl.stages.candidates) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("candidates", snakemake)  # noqa: F821

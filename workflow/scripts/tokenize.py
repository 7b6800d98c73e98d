"""Rule script: runs stage `tokenize` (crystalrl.stages.tokenize) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("tokenize", snakemake)  # noqa: F821

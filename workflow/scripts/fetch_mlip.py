"""Rule script: runs stage `fetch_mlip` (crystalrl.stages.fetch_mlip) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("fetch_mlip", snakemake)  # noqa: F821

"""Rule script: runs stage `import_checkpoint` (crystalrl.stages.import_checkpoint) with this job's files, params, log and threads."""
from crystalrl.stages import main

if "snakemake" in globals():
    main("import_checkpoint", snakemake)  # noqa: F821

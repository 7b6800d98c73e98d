"""Stage `curate_shard`: one shard of the data source parsed and filtered (see `crystalrl.stages.curate`)."""
from crystalrl.stages.curate import run_shard as run

__all__ = ["run"]

"""PPO fine-tuning (not built yet: fails with the missing capability)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _not_built import fail  # noqa: E402

if "snakemake" in globals():
    fail("ppo", "PPO fine-tuning with rewards (issue 5)")

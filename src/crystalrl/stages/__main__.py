"""One process of a stage that runs as several (`crystalrl.distributed.launch` starts it)."""
import sys

from crystalrl.stages import run_worker

if __name__ == "__main__":
    sys.exit(run_worker(sys.argv[1]))

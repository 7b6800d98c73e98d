# What each rule asks a cluster for. The figures below are paper-scale needs; a few
# environment variables fit them to the cluster at hand (README, "On a SLURM cluster"):
#   CRYSTALRL_CPU_PARTITION / CRYSTALRL_GPU_PARTITION   partitions (default cpu / gpu)
#   CRYSTALRL_ACCOUNT                                   account (default: none given)
#   CRYSTALRL_GPU_TYPE                                  GPU type (default: any GPU)
#   CRYSTALRL_NODE_CPUS / CRYSTALRL_NODE_MEM_MB         node size: caps on threads and memory
#   CRYSTALRL_MEM_SCALE / CRYSTALRL_RUNTIME_SCALE       multiply every memory / runtime figure
#   CRYSTALRL_MAX_RUNTIME                               cap on minutes (the partition's limit)
# They live in the rules' own `resources:` (not in the profile), so a second profile or
# `--set-resources` changes one figure and keeps a GPU rule's partition and GPU. Locally
# they change nothing but the thread cap.
import os

from crystalrl.slurm import ClusterSettings, job_resources, job_threads

CLUSTER = ClusterSettings.from_env(os.environ)

# rule: (memory MB, runtime minutes, needs a GPU)
RULE_NEEDS = {
    "curate": (16000, 240, False),
    "tokenize": (16000, 240, False),
    "prepare_hull": (32000, 120, False),
    "pretrain": (32000, 2880, True),
    "import_checkpoint": (8000, 30, False),
    "sample": (16000, 240, True),
    "relax_chunk": (16000, 480, True),
    "merge_relax": (4000, 60, False),
    "sft_data": (4000, 60, False),
    "sft": (32000, 720, True),
    "ppo": (32000, 1440, True),
    "evaluate": (16000, 480, True),
    "sun_table": (4000, 60, False),
    "report": (4000, 60, False),
    "train_dielectric": (32000, 720, True),
    "predict_dielectric": (16000, 120, True),
    "report_dielectric": (4000, 60, False),
}


def rule_resources(rule):
    """`resources: **rule_resources("x")`: memory, runtime, partition (+ GPU, account)."""
    mem_mb, runtime, gpu = RULE_NEEDS[rule]
    return job_resources(mem_mb, runtime, gpu, CLUSTER)


def rule_threads(stage):
    """Threads of a stage (config `threads`), capped at CRYSTALRL_NODE_CPUS; Slurm jobs ask
    exactly this many CPUs (--cpus-per-task)."""
    return job_threads(threads_for(stage), CLUSTER)

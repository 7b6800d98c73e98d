# What each rule asks a cluster for. The figures below are paper-scale needs; a few
# environment variables fit them to the cluster at hand (README, "On a SLURM cluster"):
#   CRYSTALRL_CPU_PARTITION / CRYSTALRL_GPU_PARTITION   partitions (default cpu / gpu)
#   CRYSTALRL_ACCOUNT                                   account (default: none given)
#   CRYSTALRL_GPU_TYPE                                  GPU type (default: any GPU)
#   CRYSTALRL_NODE_CPUS / CRYSTALRL_NODE_MEM_MB         node size: caps on threads and memory
#   CRYSTALRL_MEM_SCALE / CRYSTALRL_RUNTIME_SCALE       multiply every memory / runtime figure
#   CRYSTALRL_MAX_RUNTIME                               cap on minutes (the partition's limit)
#   CRYSTALRL_STOP_BEFORE_LIMIT_S                       checkpoint + requeue this long before it (600)
# GPUs per node and JAX processes of the GPU rules come from the config (`gpus:`, `processes:`).
# They live in the rules' own `resources:` (not in the profile), so a second profile or
# `--set-resources` changes one figure and keeps a GPU rule's partition and GPU. Locally
# they change nothing but the thread cap.
import os

from crystalrl.slurm import ClusterSettings, job_resources, job_threads

CLUSTER = ClusterSettings.from_env(os.environ)

# rule: (memory MB per node, runtime minutes, the `gpus:`/`processes:` config key of a GPU
# rule or None, checkpoints and requeues at a time limit)
RULE_NEEDS = {
    "curate": (16000, 240, None, False),
    "curate_merge": (16000, 120, None, False),
    "tokenize": (16000, 240, None, False),
    "prepare_hull": (32000, 120, None, False),
    "pretrain": (32000, 2880, "pretrain", True),
    "import_checkpoint": (8000, 30, None, False),
    "sample": (16000, 240, "sample", False),
    "relax_chunk": (16000, 480, "relax", False),
    "merge_relax": (4000, 60, None, False),
    "sft_data": (4000, 60, None, False),
    "sft": (32000, 720, "sft", True),
    "ppo": (32000, 1440, "ppo", True),
    "evaluate": (16000, 480, "evaluate", False),
    "sun_table": (4000, 60, None, False),
    "report": (4000, 60, None, False),
    "train_dielectric": (32000, 720, "dielectric", False),
    "predict_dielectric": (16000, 120, "dielectric", False),
    "report_dielectric": (4000, 60, None, False),
}


def rule_resources(rule):
    """`resources: **rule_resources("x")`: memory, runtime, partition (+ GPUs, tasks, account,
    the signal before a time limit), from RULE_NEEDS and the `gpus:`/`processes:` config.
    """
    mem_mb, runtime, stage, long_job = RULE_NEEDS[rule]
    procs = config["processes"].get(stage, {}) if stage else {}
    return job_resources(
        mem_mb,
        runtime,
        stage is not None,
        CLUSTER,
        gpus=config["gpus"][stage] if stage else 0,
        nodes=procs.get("nodes", 1),
        tasks_per_node=procs.get("tasks_per_node", 1),
        stop_before_limit=long_job,
    )


def rule_threads(stage):
    """Threads of a stage (config `threads`), capped at CRYSTALRL_NODE_CPUS; Slurm jobs ask
    exactly this many CPUs (--cpus-per-task)."""
    return job_threads(threads_for(stage), CLUSTER)

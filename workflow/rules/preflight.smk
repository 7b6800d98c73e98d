# Pre-flight check of Slurm runs, before the first job is submitted: every job's request
# (CPUs, memory, GPUs, runtime, partition) must fit some node of its partition, and the
# plugin must be able to see finished jobs. Slurm would otherwise accept a job that can
# never start and let it pend forever (Reason=PartitionConfig) while Snakemake prints
# nothing, or Snakemake would wait forever for jobs that ended (sacct without accounting).
# `onstart` runs after the DAG is built, with every profile and --set-resources applied,
# and before the scheduler submits anything; jobs on the cluster run with --no-hooks.
import shutil
import subprocess

from snakemake.exceptions import WorkflowError

from crystalrl import slurm as slurm_lib


def _slurm_command(args):
    """stdout of a Slurm command; a controller that does not answer stops the run."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise WorkflowError(
            f"pre-flight: `{' '.join(args)}` failed ({proc.stderr.strip()}); "
            "is the Slurm controller up?"
        )
    return proc.stdout


def slurm_preflight(workflow, log=print):
    if workflow.executor_plugin is None or workflow.executor_plugin.name != "slurm":
        return
    if shutil.which("sinfo") is None:
        log(
            "pre-flight: `sinfo` not found, so job requests are not checked against the cluster's nodes"
        )
        return
    requests = [
        slurm_lib.request_from_resources(job.rule.name, job.threads, job.resources)
        for job in workflow.dag.needrun_jobs()
        if not job.is_local
    ]
    if not requests:
        return
    settings = workflow.executor_settings
    conf = slurm_lib.parse_scontrol_config(
        _slurm_command(["scontrol", "show", "config"])
    )
    problem = slurm_lib.status_polling_problem(
        getattr(settings, "status_command", None),
        conf,
        init_s=getattr(settings, "init_seconds_before_status_checks", None) or 40,
        sacct_installed=shutil.which("sacct") is not None,
    )
    if problem:
        raise WorkflowError(f"pre-flight: {problem}")
    nodes = slurm_lib.parse_sinfo(_slurm_command(slurm_lib.SINFO_ARGS))
    bad = slurm_lib.misfits(requests, nodes)
    if bad:
        raise WorkflowError(
            "pre-flight: no node can run these jobs, so Slurm would let them pend forever; "
            "nothing was submitted. Size the jobs with the CRYSTALRL_* variables "
            f"({slurm_lib.ENV_HELP}) or --set-resources:\n  " + "\n  ".join(bad)
        )
    log(
        f"pre-flight: {len(requests)} Slurm jobs fit the nodes of their partitions "
        f"({', '.join(sorted({r.partition or 'default' for r in requests}))})"
    )


onstart:
    slurm_preflight(workflow, log=logger.info)

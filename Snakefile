# CrystalFormer-RL: curate -> tokenize -> pretrain -> sample -> relax -> SFT -> PPO
# -> evaluate (S.U.N.) -> report. `snakemake --configfile config/demo.yaml --cores 2`
# runs the CPU demo; `snakemake --profile slurm all` the paper-scale run.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/preflight.smk"
# Rules chain through `rules.X.output`, so a file comes after the files it reads from.
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/relax.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/dielectric.smk"
include: "workflow/rules/rl.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,

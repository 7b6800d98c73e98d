# Side branch: dielectric tensor (M3GNet) and band gap (MEGNet) models for the FoM reward,
# and Fig. 6 of the samples of the FoM runs.
DIELECTRIC = f"{R}/models/dielectric"

if config["dielectric"]["enabled"] and config["dielectric"]["url"]:

    # Materials Project DFPT dielectric data (matminer `dielectric_constant`).
    rule download_dielectric:
        output:
            path=config["dielectric"]["data"],
        log:
            f"{LOGS}/download_dielectric.log",
        benchmark:
            f"{BENCH}/download_dielectric.tsv"
        retries: 2
        localrule: True  # runs where snakemake runs: downloads need the internet, which compute nodes often lack
        conda:
            f"{ENVS}/data.yaml"
        params:
            urls=[config["dielectric"]["url"]],
            sha256={
                os.path.basename(config["dielectric"]["data"]): config["dielectric"][
                    "sha256"
                ]
            },
            lock=config["inputs_lock"],
        script:
            "../scripts/download.py"


rule train_dielectric:
    """Train the total dielectric tensor model (6 components) and the band gap model."""
    input:
        data=config["dielectric"]["data"],
    output:
        eps_model=directory(f"{DIELECTRIC}/eps"),
        gap_model=directory(f"{DIELECTRIC}/gap"),
        metrics=f"{R}/metrics/dielectric.json",
    log:
        f"{LOGS}/train_dielectric.log",
    benchmark:
        f"{BENCH}/train_dielectric.tsv"
    conda:
        f"{ENVS}/mlip.yaml"
    threads: rule_threads("train")
    resources:
        **rule_resources("train_dielectric"),
    params:
        dielectric=config["dielectric"],
    script:
        "../scripts/train_dielectric.py"


rule predict_dielectric:
    """Band gap, dielectric constant and FoM of the samples of one model (for Fig. 6)."""
    input:
        samples=expand(rules.sample.output.samples, set="per_sg", allow_missing=True)[0],
        eval=expand(rules.evaluate.output.eval, set="per_sg", allow_missing=True)[0],
        eps_model=rules.train_dielectric.output.eps_model,
        gap_model=rules.train_dielectric.output.gap_model,
    output:
        preds=f"{R}/dielectric/{{model}}.parquet",
    log:
        f"{LOGS}/predict_dielectric_{{model}}.log",
    benchmark:
        f"{BENCH}/predict_dielectric_{{model}}.tsv"
    conda:
        f"{ENVS}/mlip.yaml"
    threads: rule_threads("mlip")
    resources:
        **rule_resources("predict_dielectric"),
    params:
        spacegroups=DIELECTRIC_SPACEGROUPS,
    script:
        "../scripts/predict_dielectric.py"


rule report_dielectric:
    """Fig. 6 and the table of top dielectric candidates (Appendix E)."""
    input:
        preds=expand(rules.predict_dielectric.output.preds, model=DIELECTRIC_MODELS),
        dfpt=config["dielectric"]["data"],
    output:
        scatter=report(
            f"{R}/figures/dielectric_pareto.png",
            caption="../report/dielectric.rst",
            category="Dielectric",
        ),
        ehull=report(
            f"{R}/figures/dielectric_ehull_hist.png",
            caption="../report/dielectric.rst",
            category="Dielectric",
        ),
        table=report(
            f"{R}/tables_dielectric/top_candidates.csv",
            caption="../report/dielectric.rst",
            category="Dielectric",
        ),
    log:
        f"{LOGS}/report_dielectric.log",
    benchmark:
        f"{BENCH}/report_dielectric.tsv"
    conda:
        f"{ENVS}/data.yaml"
    resources:
        **rule_resources("report_dielectric"),
    params:
        stable=config["evaluate"]["stable_threshold"],
        matcher=config["evaluate"]["matcher"],
        match_spacegroup=config["evaluate"]["match_spacegroup"],
    script:
        "../scripts/report_dielectric.py"

# Side branch: dielectric tensor (M3GNet) and band gap (MEGNet) models for the FoM reward.
DIELECTRIC = f"{R}/models/dielectric"

if config["dielectric"]["enabled"] and config["dielectric"]["url"]:

    rule download_dielectric:
        """Materials Project DFPT dielectric data (matminer `dielectric_constant`)."""
        output:
            config["dielectric"]["data"],
        params:
            urls=[config["dielectric"]["url"]],
            sha256={os.path.basename(config["dielectric"]["data"]): config["dielectric"]["sha256"]},
        log:
            f"{LOGS}/download_dielectric.log",
        benchmark:
            f"{BENCH}/download_dielectric.tsv"
        conda:
            f"{ENVS}/data.yaml"
        retries: 2
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
    params:
        dielectric=config["dielectric"],
    threads: threads_for("train")
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=720,
    log:
        f"{LOGS}/train_dielectric.log",
    benchmark:
        f"{BENCH}/train_dielectric.tsv"
    conda:
        f"{ENVS}/mlip.yaml"
    script:
        "../scripts/train_dielectric.py"

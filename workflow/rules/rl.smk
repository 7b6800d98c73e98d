# Fine-tuning: SFT on relaxed stable samples of the base model, and PPO with rewards.


rule sft_data:
    """Keep relaxed base samples with e_hull below the threshold as SFT training data."""
    input:
        relaxed=f"{R}/relax/base/sft_pool.parquet",
    output:
        data=f"{R}/data/sft_train.parquet",
    params:
        e_hull_max=config["sft"]["e_hull_max"],
    log:
        f"{LOGS}/sft_data.log",
    benchmark:
        f"{BENCH}/sft_data.tsv"
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/sft_data.py"


rule sft:
    """Fine-tune the base model on its own relaxed, stable samples (the pretrain loop)."""
    input:
        train_tokens=f"{R}/data/tokens_sft_train.parquet",
        val_tokens=f"{R}/data/tokens_val.parquet",
        init_model=f"{R}/models/base",
    output:
        model=directory(f"{R}/models/sft"),
        metrics=f"{R}/metrics/sft.parquet",
    params:
        model=model_params(),
        train={k: v for k, v in config["sft"].items() if k not in ("n_samples", "e_hull_max")},
        ckpt_dir=f"{R}/checkpoints/sft",
    threads: threads_for("train")
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=720,
    log:
        f"{LOGS}/sft.log",
    benchmark:
        f"{BENCH}/sft.tsv"
    conda:
        f"{ENVS}/model.yaml"
    script:
        "../scripts/pretrain.py"


rule ppo:
    """PPO fine-tuning with a reward (Eq. 1): reward - beta KL(policy || start model)."""
    input:
        hull_input,
        start_model=ppo_start_model,
        train_tokens=f"{R}/data/tokens_train.parquet",
        dielectric=lambda w: (
            [f"{DIELECTRIC}/eps", f"{DIELECTRIC}/gap"] if ppo_params(w)["reward"] == "dielectric_fom" else []
        ),
    output:
        model=directory(f"{R}/models/ppo_{{name}}"),
        metrics=f"{R}/metrics/ppo_{{name}}.parquet",
    params:
        ppo=ppo_params,
        mlip=config["mlip"],
        hull=hull_params(),
        ckpt_dir=lambda w: f"{R}/checkpoints/ppo_{w.name}",
    threads: threads_for("train")
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=1440,
    log:
        f"{LOGS}/ppo_{{name}}.log",
    benchmark:
        f"{BENCH}/ppo_{{name}}.tsv"
    conda:
        f"{ENVS}/model.yaml"
    script:
        "../scripts/ppo.py"

# Fine-tuning: SFT on relaxed stable samples of the base model, and PPO with rewards.


rule sft_data:
    """Keep relaxed base samples with e_hull below the threshold as SFT training data."""
    input:
        relaxed=expand(rules.merge_relax.output.relaxed, model="base", set="sft_pool")[
            0
        ],
    output:
        data=f"{R}/data/sft_train.parquet",
    log:
        f"{LOGS}/sft_data.log",
    benchmark:
        f"{BENCH}/sft_data.tsv"
    conda:
        f"{ENVS}/data.yaml"
    resources:
        **rule_resources("sft_data"),
    params:
        e_hull_max=config["sft"]["e_hull_max"],
    script:
        "../scripts/sft_data.py"


rule sft:
    """Fine-tune the base model on its own relaxed, stable samples (the pretrain loop)."""
    input:
        train_tokens=tokens("sft_train"),
        val_tokens=tokens("val"),
        init_model=BASE_MODEL,
    output:
        model=directory(f"{R}/models/sft"),
        metrics=f"{R}/metrics/sft.parquet",
    log:
        f"{LOGS}/sft.log",
    benchmark:
        f"{BENCH}/sft.tsv"
    conda:
        f"{ENVS}/model.yaml"
    threads: rule_threads("train")
    resources:
        **rule_resources("sft"),
    params:
        model=config["model"],
        train=config["sft"],
        section="sft",
        ckpt_dir=f"{R}/checkpoints/sft",
    script:
        "../scripts/train.py"


rule ppo:
    """PPO fine-tuning with a reward (Eq. 1): reward - beta KL(policy || start model);
    or DPO/IPO on preference pairs (ppo.algorithm: dpo, ipo)."""
    input:
        hull=lambda w: hull_input() if ppo_reward_needs(w, "hull") else [],
        mlip_weights=lambda w: mlip_input() if ppo_reward_needs(w, "mlip") else [],
        start_model=ppo_start_model,
        train_tokens=lambda w: [] if ppo_offline(w) else tokens("train"),
        dielectric=lambda w: (
            [
                rules.train_dielectric.output.eps_model,
                rules.train_dielectric.output.gap_model,
            ]
            if ppo_reward_needs(w, "dielectric")
            else []
        ),
        train=lambda w: (
            rules.curate.output.train if ppo_reward_needs(w, "train") else []
        ),
        pairs=ppo_pairs_input,
    output:
        model=directory(f"{R}/models/ppo_{{name}}"),
        metrics=f"{R}/metrics/ppo_{{name}}.parquet",
    log:
        f"{LOGS}/ppo_{{name}}.log",
    benchmark:
        f"{BENCH}/ppo_{{name}}.tsv"
    conda:
        f"{ENVS}/model.yaml"
    threads: rule_threads("train")
    resources:
        **rule_resources("ppo"),
    params:
        ppo=ppo_params,
        mlip=lambda w: {} if ppo_offline(w) else mlip_params(),
        hull=lambda w: hull_params() if ppo_reward_needs(w, "hull") else {},
        ckpt_dir=lambda w: f"{R}/checkpoints/ppo_{w.name}",
        tokenize=lambda w: config["tokenize"] if pairs_table(w) else {},
        novelty=lambda w: NOVELTY_PARAMS if ppo_reward_needs(w, "train") else {},
    script:
        "../scripts/ppo.py"

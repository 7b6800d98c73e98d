# The generative model: pretrain on the train split, sample from any model.


rule pretrain:
    """Pretrain CrystalFormer (Adam, clipping, Orbax checkpoints that a killed job resumes)."""
    input:
        train_tokens=f"{R}/data/tokens_train.parquet",
        val_tokens=f"{R}/data/tokens_val.parquet",
        init_model=[config["pretrain"]["init_from"]] if config["pretrain"]["init_from"] else [],
    output:
        model=directory(f"{R}/models/base"),
        metrics=f"{R}/metrics/pretrain_base.parquet",
    params:
        model=model_params(),
        train={k: v for k, v in config["pretrain"].items() if k != "init_from"},
        ckpt_dir=f"{R}/checkpoints/base",
    threads: threads_for("train")
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=2880,
    log:
        f"{LOGS}/pretrain.log",
    benchmark:
        f"{BENCH}/pretrain.tsv"
    conda:
        f"{ENVS}/model.yaml"
    script:
        "../scripts/pretrain.py"


rule sample:
    """Draw crystals from a model with the KV-cached sampler; decode them to CIF."""
    input:
        model=f"{R}/models/{{model}}",
        train_tokens=f"{R}/data/tokens_train.parquet",
    output:
        samples=f"{R}/samples/{{model}}/{{set}}.parquet",
    params:
        sample=sample_params,
        model_name=lambda w: w.model,
    threads: threads_for("sample")
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    log:
        f"{LOGS}/sample_{{model}}_{{set}}.log",
    benchmark:
        f"{BENCH}/sample_{{model}}_{{set}}.tsv"
    conda:
        f"{ENVS}/model.yaml"
    script:
        "../scripts/sample.py"

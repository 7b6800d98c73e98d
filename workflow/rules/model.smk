# The generative model: pretrain on the train split, sample from any model.


rule pretrain:
    """Pretrain CrystalFormer (Adam, clipping, Orbax checkpoints that a killed job resumes)."""
    input:
        train_tokens=tokens("train"),
        val_tokens=tokens("val"),
        init_model=[config["pretrain"]["init_from"]] if config["pretrain"]["init_from"] else [],
    output:
        model=directory(f"{R}/models/base"),
        metrics=f"{R}/metrics/pretrain_base.parquet",
    params:
        model=config["model"],
        train=config["pretrain"],
        section="pretrain",
        ckpt_dir=f"{R}/checkpoints/base",
    threads: rule_threads("train")
    resources:
        **rule_resources("pretrain"),
    log:
        f"{LOGS}/pretrain.log",
    benchmark:
        f"{BENCH}/pretrain.tsv"
    conda:
        f"{ENVS}/model.yaml"
    script:
        "../scripts/train.py"


rule sample:
    """Draw crystals from a model with the KV-cached sampler; decode them to CIF."""
    input:
        model=f"{R}/models/{{model}}",
        train_tokens=tokens("train"),
    output:
        samples=f"{R}/samples/{{model}}/{{set}}.parquet",
    params:
        sample=sample_params,
        model_name=lambda w: w.model,
    threads: rule_threads("sample")
    resources:
        **rule_resources("sample"),
    log:
        f"{LOGS}/sample_{{model}}_{{set}}.log",
    benchmark:
        f"{BENCH}/sample_{{model}}_{{set}}.tsv"
    conda:
        f"{ENVS}/model.yaml"
    script:
        "../scripts/sample.py"

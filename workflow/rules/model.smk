# The generative model: pretrain on the train split (or import a published checkpoint), sample from any model.


if BASE_FROM is None:

    rule pretrain:
        """Pretrain CrystalFormer (Adam, clipping, Orbax checkpoints that a killed job resumes)."""
        input:
            train_tokens=tokens("train"),
            val_tokens=tokens("val"),
            init_model=(
                [config["pretrain"]["init_from"]]
                if config["pretrain"]["init_from"]
                else []
            ),
        output:
            model=directory(f"{R}/models/base"),
            metrics=f"{R}/metrics/pretrain_base.parquet",
        log:
            f"{LOGS}/pretrain.log",
        benchmark:
            f"{BENCH}/pretrain.tsv"
        conda:
            f"{ENVS}/model.yaml"
        threads: rule_threads("train")
        resources:
            **rule_resources("pretrain"),
        params:
            model=config["model"],
            train=config["pretrain"],
            section="pretrain",
            ckpt_dir=f"{R}/checkpoints/base",
        script:
            "../scripts/train.py"

else:

    rule import_base:
        """The base model is a published checkpoint (`pretrain.base_from`): imported, no pretraining."""
        input:
            checkpoint=checkpoint_file(BASE_FROM),
        output:
            model=directory(BASE_MODEL),
        log:
            f"{LOGS}/import_base.log",
        benchmark:
            f"{BENCH}/import_base.tsv"
        conda:
            f"{ENVS}/model.yaml"
        resources:
            **rule_resources("import_checkpoint"),
        params:
            model=config["model"],
            source=PUBLISHED[BASE_FROM]["source"],
            sha256=PUBLISHED[BASE_FROM]["sha256"],
        script:
            "../scripts/import_checkpoint.py"


# Download a published checkpoint (a name of the authors' files, or a URL) with retries.
rule fetch_checkpoint:
    output:
        path="resources/published/{name}.pkl",
    log:
        f"{LOGS}/fetch_checkpoint_{{name}}.log",
    benchmark:
        f"{BENCH}/fetch_checkpoint_{{name}}.tsv"
    retries: 2
    localrule: True  # runs where snakemake runs: downloads need the internet, which compute nodes often lack
    conda:
        f"{ENVS}/model.yaml"
    params:
        source=lambda w: PUBLISHED[w.name]["source"],
        sha256=lambda w: PUBLISHED[w.name]["sha256"],
        revision=lambda w: PUBLISHED[w.name]["revision"],
        lock=config["inputs_lock"],
    script:
        "../scripts/fetch_checkpoint.py"


rule import_checkpoint:
    """A published checkpoint as a comparison model `published_<name>` (sampled and scored like ours)."""
    input:
        checkpoint=lambda w: checkpoint_file(w.name),
    output:
        model=directory(f"{R}/models/published_{{name}}"),
    log:
        f"{LOGS}/import_checkpoint_{{name}}.log",
    benchmark:
        f"{BENCH}/import_checkpoint_{{name}}.tsv"
    conda:
        f"{ENVS}/model.yaml"
    resources:
        **rule_resources("import_checkpoint"),
    params:
        model=config["model"],
        source=lambda w: PUBLISHED[w.name]["source"],
        sha256=lambda w: PUBLISHED[w.name]["sha256"],
    script:
        "../scripts/import_checkpoint.py"


rule sample:
    """Draw crystals from a model with the KV-cached sampler; decode them to CIF."""
    input:
        model=f"{R}/models/{{model}}",
        train_tokens=tokens("train"),
    output:
        samples=f"{R}/samples/{{model}}/{{set}}.parquet",
    log:
        f"{LOGS}/sample_{{model}}_{{set}}.log",
    benchmark:
        f"{BENCH}/sample_{{model}}_{{set}}.tsv"
    conda:
        f"{ENVS}/model.yaml"
    threads: rule_threads("sample")
    resources:
        **rule_resources("sample"),
    params:
        sample=sample_params,
        model_name=lambda w: w.model,
    script:
        "../scripts/sample.py"

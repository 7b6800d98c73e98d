"""CrystalFormer-RL as a Snakemake workflow: tokenizer, model, rewards, evaluation."""

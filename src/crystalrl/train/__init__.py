"""Pretraining / SFT loop with resumable Orbax checkpoints and the model directory format."""
from crystalrl.train.checkpoint import CheckpointStore, load_model, save_model
from crystalrl.train.loop import make_optimizer, train

__all__ = ["CheckpointStore", "load_model", "save_model", "make_optimizer", "train"]

"""CrystalFormer in Flax NNX: config, network, exact likelihood, Haiku import, sampler."""
from crystalrl.model.config import ModelConfig

__all__ = ["ModelConfig"]

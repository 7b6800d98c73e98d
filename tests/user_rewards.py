"""A user's own reward, referenced from config as `user_rewards:oxygen_fraction` (see test_rewards.py)."""
import numpy as np


def oxygen_fraction(structures):
    """Fraction of O atoms per structure; None (undecodable samples) -> NaN."""
    return np.array([np.nan if s is None else s.composition.get_atomic_fraction("O") for s in structures])

"""Hyper-parameters of the CrystalFormer network (names as the public code's CLI)."""
from __future__ import annotations

from dataclasses import dataclass

from crystalrl.config import SectionConfig


@dataclass(frozen=True)
class ModelConfig(SectionConfig):
    """Shape of the model (config section `model`; its defaults, in the schema, are the
    paper's Alex-20 configuration: build one with `ModelConfig.from_dict({...})`).

    Nf: Fourier frequencies per coordinate; Kx / Kl: von Mises / Gaussian mixture
    components for coordinates / lattice; n_max: Wyckoff sites per sequence
    (the last slot is always a pad); h0_size: width of the first-Wyckoff MLP.
    """

    Nf: int
    Kx: int
    Kl: int
    n_max: int
    h0_size: int
    num_layers: int
    num_heads: int
    key_size: int
    model_size: int
    embed_size: int
    atom_types: int
    wyck_types: int
    dropout_rate: float
    attn_dropout: float
    widening_factor: int
    sigmamin: float

    # ---- derived sizes of the shared output head ----
    @property
    def coord_types(self) -> int:
        """logits, loc, kappa of the Kx-component von Mises mixture."""
        return 3 * self.Kx

    @property
    def lattice_types(self) -> int:
        """logits (Kl) + mu (Kl*6) + sigma (Kl*6) of the lattice mixture."""
        return self.Kl + 2 * 6 * self.Kl

    @property
    def output_size(self) -> int:
        return max(self.atom_types + self.lattice_types, self.coord_types, self.wyck_types)

    @property
    def seq_len(self) -> int:
        """Tokens per crystal: W, A, X, Y, Z for each of the n_max sites."""
        return 5 * self.n_max

    def __post_init__(self):
        if self.key_size % 2:
            raise ValueError(f"key_size must be even for RoPE, got {self.key_size}")
        for name in ("Nf", "Kx", "Kl", "n_max", "num_layers", "num_heads", "key_size",
                     "model_size", "embed_size", "atom_types", "wyck_types", "widening_factor"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.h0_size < 0:
            raise ValueError(f"ModelConfig.h0_size must be >= 0, got {self.h0_size}")

    SECTION = "model"

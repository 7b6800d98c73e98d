"""Hyper-parameters of the CrystalFormer network (names as the public code's CLI)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model; the defaults are the paper's Alex-20 configuration.

    Nf: Fourier frequencies per coordinate; Kx / Kl: von Mises / Gaussian mixture
    components for coordinates / lattice; n_max: Wyckoff sites per sequence
    (the last slot is always a pad); h0_size: width of the first-Wyckoff MLP.
    """

    Nf: int = 5
    Kx: int = 16
    Kl: int = 4
    n_max: int = 21
    h0_size: int = 256
    num_layers: int = 16
    num_heads: int = 16
    key_size: int = 64
    model_size: int = 64
    embed_size: int = 32
    atom_types: int = 119
    wyck_types: int = 28
    dropout_rate: float = 0.1
    attn_dropout: float = 0.1
    widening_factor: int = 4
    sigmamin: float = 1e-3

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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Build from a mapping (e.g. a JSON/YAML config); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise KeyError(f"unknown ModelConfig key(s) {unknown}; valid keys: {sorted(names)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

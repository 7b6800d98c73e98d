"""Dielectric reward models (paper Appendix D): M3GNet tensor model, MEGNet band gap, FoM.

- `data`: the MP DFPT set -> structures, 6 Voigt components, band gaps, 8:1:1 split
- `graphs`: structures -> matgl graphs, batched forward
- `fit`: plain torch training loop (L1, Adam, cosine decay, best-val, resume)
- `train`: `train_dielectric`, training and evaluating both models
- `predict`: `DielectricPredictor` (eps, band gap, FoM = gap x eps)
"""
from crystalrl.dielectric.data import (DielectricDataset, eps_from_voigt,
                                       load_dielectric_dataset)
from crystalrl.dielectric.predict import DielectricPredictor, load_model_dir
from crystalrl.dielectric.train import merged_config, train_dielectric

__all__ = ["DielectricDataset", "DielectricPredictor", "eps_from_voigt",
           "load_dielectric_dataset", "load_model_dir", "merged_config", "train_dielectric"]

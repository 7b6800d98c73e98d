"""Stage `import_checkpoint`: a published CrystalFormer pickle -> a crystalrl model directory.

params: model (the run's `model:` section, which the checkpoint must match; dropout rates
free), source, sha256; inputs: checkpoint; outputs: model. Nothing in the pickle runs:
it is read by a restricted unpickler, and the model's meta.json records its sha256.
"""
from __future__ import annotations

from crystalrl.model.config import ModelConfig
from crystalrl.model.published import import_checkpoint


def run(inputs, outputs, params, log, threads=1) -> None:
    import_checkpoint(inputs.checkpoint, outputs.model, ModelConfig.from_dict(params["model"]),
                      sha256=params["sha256"], source=params["source"], log=log)

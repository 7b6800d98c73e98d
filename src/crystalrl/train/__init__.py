"""Pretraining / SFT: token arrays and data order (`data`), the loop (`loop`), resumable
training checkpoints (`checkpoint`). Models themselves are built, saved and loaded by
`crystalrl.model.store`."""

"""Evaluation of generated crystals: validity (`validity`), uniqueness/novelty matching
(`matching`), per-sample flags and the S.U.N. table (`sun`). Import from the submodules."""

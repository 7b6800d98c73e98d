"""Evaluation of generated crystals: validity, uniqueness/novelty matching, S.U.N. tables."""
from crystalrl.evaluate.matching import NoveltyIndex, formula_key, unique_mask
from crystalrl.evaluate.sun import evaluate_samples, run_evaluation, sun_table, sun_table_from_files
from crystalrl.evaluate.validity import composition_validity, structure_validity, validity_table

__all__ = ["NoveltyIndex", "formula_key", "unique_mask",
           "evaluate_samples", "run_evaluation", "sun_table", "sun_table_from_files",
           "composition_validity", "structure_validity", "validity_table"]

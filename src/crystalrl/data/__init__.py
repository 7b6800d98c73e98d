"""Data sources, downloads, the offline demo set and curation (filters, dedupe, split)."""
from crystalrl.data.curate import curate, run_curate, split_of
from crystalrl.data.download import download
from crystalrl.data.sources import Row, parse_structure, read_source

__all__ = ["Row", "curate", "download", "parse_structure", "read_source", "run_curate", "split_of"]

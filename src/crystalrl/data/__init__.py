"""Data sources (`sources`), downloads (`download`), the offline demo set (`demo`)
and curation: filters, dedupe, seeded split (`curate`).

Import from the submodules (`from crystalrl.data.curate import curate`); nothing is
re-exported here, so that a function never shadows the submodule of the same name.
"""

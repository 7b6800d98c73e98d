"""The offline demo set: counted, checked for size and symmetry, built without network."""
from __future__ import annotations

import math
import socket

import pytest
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalrl.data.sources import DEMO_SOURCE as SOURCE, read_demo as demo_rows


@pytest.fixture(scope="module")
def rows():
    mp = pytest.MonkeyPatch()

    def no_network(*args, **kwargs):
        raise AssertionError("the demo set must not touch the network")

    mp.setattr(socket.socket, "connect", no_network)
    mp.setattr(socket, "create_connection", no_network)
    try:
        return list(demo_rows())
    finally:
        mp.undo()


def test_counts_space_groups_elements(rows):
    assert len(rows) >= 200
    assert all(len(r.structure) <= 20 for r in rows)
    sgs = {SpacegroupAnalyzer(r.structure, symprec=0.1).get_space_group_number() for r in rows}
    assert len(sgs) >= 80
    elements = {el.symbol for r in rows for el in r.structure.composition}
    assert len(elements) >= 60
    # the figures quoted in crystalrl.data.demo's docstring
    assert (len(rows), len(sgs), len(elements)) == (250, 90, 67)


def test_ids_unique_deterministic_and_ordered(rows):
    ids = [r.id for r in rows]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("aflow:") for i in ids)
    assert "aflow:AB_cF8_225_a_b" in ids  # rock salt
    assert ids == [r.id for r in demo_rows()]
    assert all(r.source == SOURCE and math.isnan(r.e_above_hull) for r in rows)
    assert all(r.structure.is_ordered for r in rows)


def test_max_atoms_argument(rows):
    small = list(demo_rows(max_atoms=4))
    assert 0 < len(small) < len(rows) and all(len(r.structure) <= 4 for r in small)


def test_demo_set_survives_curation(rows):
    """The demo run curates this set with the default filters: nearly all of it must pass."""
    import pandas as pd

    from crystalrl.data.curate import curate

    splits, rejected = curate(rows)
    kept = pd.concat(splits.values())
    assert len(kept) + len(rejected) == len(rows)
    assert len(kept) >= 245 and kept["spacegroup"].nunique() >= 88
    # what is dropped is a genuine duplicate: pyrite stored in P1 is pyrite (Pa-3)
    assert rejected["reason"].str.contains("structural duplicate of").all()
    assert min(len(splits["val"]), len(splits["test"])) >= 15

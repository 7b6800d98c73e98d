"""Wyckoff tables: the facts measured on the public code's tables, and pyxtal agreement."""
from __future__ import annotations

import numpy as np
import pytest

from crystalrl import wyckoff as W


def test_letters_round_trip():
    assert W.letter_to_index("a") == 1
    assert W.letter_to_index("z") == 26
    assert W.letter_to_index("A") == 27
    assert [W.index_to_letter(i) for i in (1, 26, 27)] == ["a", "z", "A"]
    assert all(W.letter_to_index(W.index_to_letter(i)) == i for i in range(1, 28))
    with pytest.raises(ValueError):
        W.letter_to_index("B")
    with pytest.raises(ValueError):
        W.index_to_letter(0)


def test_table_shapes_and_dtypes():
    assert W.mult_table().shape == (W.N_SG, W.WYCK_TYPES) and W.mult_table().dtype == np.int32
    assert W.wmax_table().shape == (W.N_SG,) and W.wmax_table().dtype == np.int32
    assert W.dof0_table().shape == (W.N_SG, W.WYCK_TYPES) and W.dof0_table().dtype == bool
    assert W.fc_mask_table().shape == (W.N_SG, W.WYCK_TYPES, 3)
    assert W.op0_table().shape == (W.N_SG, W.WYCK_TYPES, 3, 4)
    assert W.lattice_mask_table().shape == (W.N_SG, 6)
    assert not W.mult_table().flags.writeable  # cached tables cannot be corrupted


def test_counts_from_design():
    mult = W.mult_table()
    valid = mult > 0
    assert valid.sum() == 1731
    assert (W.dof0_table() & valid).sum() == 616
    assert W.wmax_table().max() == 27 and int(np.argmax(W.wmax_table())) + 1 == 47
    assert mult.max() == 192
    nfc = W.fc_mask_table().sum(-1)[valid]
    assert [(nfc == k).sum() for k in (1, 2, 3)] == [571, 242, 302]
    assert np.all(mult[:, 0] == 0)
    # letters are contiguous: positions 1..wmax are filled, none beyond
    w = np.arange(W.WYCK_TYPES)
    assert np.array_equal(valid, (w[None] >= 1) & (w[None] <= W.wmax_table()[:, None]))


def test_sg225():
    assert W.mult_table()[224, 1:13].tolist() == [4, 4, 8, 24, 24, 32, 48, 48, 48, 96, 96, 192]
    assert W.fc_mask_table()[224, W.letter_to_index("f")].tolist() == [True, True, True]
    dof0 = W.dof0_table()[224, 1:13]
    assert np.nonzero(dof0)[0].tolist() == [0, 1, 2, 3]  # a, b, c, d only
    assert W.dof0_table()[224, 0]  # pad counts as fixed, as in the public code
    assert W.general_ops(225).shape == (192, 3, 4)
    np.testing.assert_array_equal(W.general_ops(225)[0], np.hstack([np.eye(3), np.zeros((3, 1))]))


def test_fc_mask_dependent_coordinates_are_free():
    # every position whose op0 reads 'x, x, z' (y copies x) has all three coordinates 'free'
    op0 = W.op0_table()
    lin = op0[..., :3]
    xxz = (lin[..., 0, 0] == 1) & (lin[..., 1, 0] == 1) & (lin[..., 2, 2] == 1)
    assert xxz.any()
    assert W.fc_mask_table()[xxz].all()


def test_ops_agree_with_pyxtal_group():
    from pyxtal.symmetry import Group
    for g in (1, 2, 14, 47, 62, 139, 166, 194, 225, 230):
        grp = Group(g)
        assert len(grp.Wyckoff_positions) == W.wmax_table()[g - 1]
        for wp in grp.Wyckoff_positions:
            w = W.letter_to_index(wp.letter)
            assert wp.multiplicity == W.mult_table()[g - 1, w], (g, wp.letter)
            ours = W.wyckoff_ops(g, w)
            theirs = np.array([op.affine_matrix[:3] for op in wp.ops])
            np.testing.assert_allclose(ours, theirs, atol=1e-12, err_msg=f"{g}{wp.letter}")


def test_op0_fixes_representatives():
    # op0 is a projection: applying it twice equals applying it once
    rng = np.random.default_rng(0)
    x = rng.random(3)
    for g in (12, 63, 141, 166, 227):
        for w in range(1, W.wmax_table()[g - 1] + 1):
            op = W.op0_table()[g - 1, w]
            y = op[:, :3] @ x + op[:, 3]
            np.testing.assert_allclose(op[:, :3] @ y + op[:, 3], y, atol=1e-12)


def test_wyckoff_ops_errors():
    with pytest.raises(ValueError, match="no Wyckoff position"):
        W.wyckoff_ops(1, 2)
    with pytest.raises(ValueError, match="out of range"):
        W.wyckoff_ops(231, 1)


def test_lattice_mask_by_ranges():
    m = W.lattice_mask_table().astype(int)
    expect = {(1, 2): [1] * 6, (3, 15): [1, 1, 1, 0, 1, 0], (16, 74): [1, 1, 1, 0, 0, 0],
              (75, 194): [1, 0, 1, 0, 0, 0], (195, 230): [1, 0, 0, 0, 0, 0]}
    for (lo, hi), mask in expect.items():
        assert (m[lo - 1:hi] == mask).all(), (lo, hi)


def test_symmetrize_lattice_batched():
    g = np.array([[1, 14], [62, 129], [166, 229]])
    lat = np.broadcast_to([3.0, 4.0, 5.0, 80.0, 85.0, 100.0], (3, 2, 6))
    out = W.symmetrize_lattice(g, lat)
    assert out.shape == (3, 2, 6)
    np.testing.assert_allclose(out[0, 0], [3, 4, 5, 80, 85, 100])
    np.testing.assert_allclose(out[0, 1], [3, 4, 5, 90, 85, 90])
    np.testing.assert_allclose(out[1, 0], [3, 4, 5, 90, 90, 90])
    np.testing.assert_allclose(out[1, 1], [3, 3, 5, 90, 90, 90])
    np.testing.assert_allclose(out[2, 0], [3, 3, 5, 90, 90, 120])
    np.testing.assert_allclose(out[2, 1], [3, 3, 3, 90, 90, 90])
    rad = W.symmetrize_lattice(194, [3.0, 4.0, 5.0, 1.0, 1.0, 1.0], degrees=False)
    np.testing.assert_allclose(rad, [3, 3, 5, np.pi / 2, np.pi / 2, 2 * np.pi / 3])
    # free parameters are never changed
    mask = W.lattice_mask_table()[g - 1]
    np.testing.assert_array_equal(out[mask], np.asarray(lat)[mask])
    with pytest.raises(ValueError):
        W.symmetrize_lattice(0, lat[0, 0])

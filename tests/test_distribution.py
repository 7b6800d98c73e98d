"""Distribution match and diversity of samples against the training set (issue 26)."""
import numpy as np
import pandas as pd

from crystalrl.evaluate.distribution import distribution_table, entropy_bits, jsd


def test_jsd_and_entropy_on_known_distributions():
    p = pd.Series({"a": 0.5, "b": 0.5})
    assert jsd(p, p) == 0.0
    assert abs(jsd(pd.Series({"a": 1.0}), pd.Series({"b": 1.0})) - 1.0) < 1e-12  # disjoint: the maximum, 1 bit
    assert abs(entropy_bits(pd.Series({"a": 1, "b": 1, "c": 1, "d": 1})) - 2.0) < 1e-12


def test_a_collapsed_model_is_far_from_the_training_set_and_less_diverse():
    """A model that emits one composition in one space group (a hacked reward) scores a larger
    JSD and fewer effective elements and space groups than one that follows the training set."""
    train = pd.DataFrame({"spacegroup": [225, 221, 194, 12, 2, 139] * 5,
                          "formula": ["NaCl", "SrTiO3", "MgB2", "LiFePO4", "CuO", "BaTiO3"] * 5})
    follows = pd.DataFrame({"G": train["spacegroup"][:12], "formula": train["formula"][:12]})
    collapsed = pd.DataFrame({"G": [225] * 12, "formula": ["Na"] * 11 + [None]})
    t = distribution_table({"base": follows, "ppo": collapsed}, train).set_index("model")
    assert t.loc["base", "jsd_spacegroup"] < 0.05 and t.loc["base", "jsd_elements"] < 0.05
    assert t.loc["ppo", "jsd_spacegroup"] > 0.5 and t.loc["ppo", "jsd_elements"] > 0.5
    assert t.loc["ppo", "effective_elements"] == 1.0 and t.loc["ppo", "n_decoded"] == 11
    assert t.loc["base", "effective_spacegroups"] > 5.9 and np.isclose(t.loc["ppo", "effective_spacegroups"], 1.0)

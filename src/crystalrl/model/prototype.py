"""A crystal prototype to generate: one space group, a Wyckoff letter per site, the elements each
site may hold, and sites that must hold the same element.

As the public CrystalFormer's `--wyckoff a b c` with an `atoms.json` (`atom_mask` per site,
`constraints`). The sampler takes it as arrays (`Prototype.arrays`): every sample then has
exactly these sites, and the log-likelihood it carries is still the model's own of what it
drew (`crystalrl.model.condition`). Light to import: the workflow checks prototypes while
it parses (`problems`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from crystalrl import wyckoff


@dataclass(frozen=True)
class Prototype:
    """Sites fixed by Wyckoff letter, each with the elements it may hold (config `generate.<name>`).

    spacegroup: 1..230; wyckoff: a letter per site ('a'..'z', 'A'); atoms: per site, the
    allowed element symbols (empty or missing: any of `elements`, else any element);
    same_element: [i, j] pairs (0-based site numbers, i < j): site j holds site i's element.
    """

    spacegroup: int
    wyckoff: tuple[str, ...]
    atoms: tuple[tuple[str, ...], ...] = ()
    same_element: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping) -> Prototype:
        return cls(int(d["spacegroup"]), tuple(d["wyckoff"]), tuple(tuple(a) for a in d.get("atoms") or ()),
                   tuple((int(i), int(j)) for i, j in d.get("same_element") or ()))

    def problems(self, n_max: int | None = None, tables: bool = True) -> list[str]:
        """What is wrong with it, in words naming the field (empty when it can be sampled).
        tables=False skips the check against the group's letters (it reads the Wyckoff tables)."""
        out = []
        if not 1 <= self.spacegroup <= 230:
            return [f"spacegroup {self.spacegroup} is not in 1..230"]
        n_letters = int(wyckoff.wmax_table()[self.spacegroup - 1]) if tables else wyckoff.WYCK_TYPES - 1
        for k, letter in enumerate(self.wyckoff):
            try:
                w = wyckoff.letter_to_index(letter)
            except ValueError as exc:
                out.append(f"wyckoff[{k}]: {exc}")
                continue
            if w > n_letters:
                out.append(f"wyckoff[{k}]: space group {self.spacegroup} has letters a..{wyckoff.index_to_letter(n_letters)}, "
                           f"not {letter!r}")
        if not self.wyckoff:
            out.append("wyckoff: at least one site")
        if n_max is not None and len(self.wyckoff) >= n_max:
            out.append(f"wyckoff: {len(self.wyckoff)} sites, the model holds at most {n_max - 1}")
        if self.atoms and len(self.atoms) != len(self.wyckoff):
            out.append(f"atoms: {len(self.atoms)} lists for {len(self.wyckoff)} sites (one per Wyckoff letter)")
        for i, j in self.same_element:
            if not 0 <= i < j < len(self.wyckoff):
                out.append(f"same_element [{i}, {j}]: need 0 <= i < j < {len(self.wyckoff)} (the number of sites)")
        return out

    def arrays(self, cfg, elements: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(w_fixed (n_max,), atom_mask (n_max, atom_types), same_as (n_max,)) for `sampler.sample`.
        A site's own element list replaces `elements` (the whitelist of the other sites)."""
        from crystalrl.model.sampler import element_mask

        problems = self.problems(cfg.n_max)
        if problems:
            raise ValueError("prototype: " + "; ".join(problems))
        n = len(self.wyckoff)
        w_fixed = np.zeros(cfg.n_max, np.int32)  # the pad after the last site ends the crystal
        w_fixed[:n] = [wyckoff.letter_to_index(x) for x in self.wyckoff]
        anywhere = np.ones(cfg.atom_types, bool) if not elements else element_mask(elements, cfg)
        mask = np.tile(anywhere, (cfg.n_max, 1))
        for i, allowed in enumerate(self.atoms):
            if allowed:
                mask[i] = element_mask(allowed, cfg)
        same_as = np.arange(cfg.n_max, dtype=np.int32)
        for i, j in sorted(self.same_element, key=lambda p: p[1]):
            same_as[j] = same_as[i]  # chains resolve to the first site
        return w_fixed, mask, same_as

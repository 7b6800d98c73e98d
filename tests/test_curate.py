"""Curation on real structures: filters, dedupe, seeded split, rejected rows, run_curate."""
from __future__ import annotations

import math
import re
import runpy
from types import SimpleNamespace

import pandas as pd
import pytest
from pymatgen.core import Structure
from pymatgen.core.operations import SymmOp
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalrl.data.curate import OUTPUT_COLUMNS, REJECTED_COLUMNS, curate, split_of
from crystalrl.data.sources import read_source
from crystalrl.stages import run_stage
from crystalrl.structures import parse_structure


@pytest.fixture(scope="module")
def index(shared_data):
    df = pd.read_csv(shared_data / "alexandria_sample" / "index.csv")
    return df.set_index(df["file"].str.removesuffix(".cif"))


@pytest.fixture(scope="module")
def alex_rows(shared_data):
    """All 1,980 Alexandria rows (unparsed CIF text)."""
    return list(read_source("cif_dir", shared_data / "alexandria_sample" / "cifs.tar.gz"))


@pytest.fixture(scope="module")
def small_rows(alex_rows, index):
    """Rows with at most 8 atoms: cheap to curate."""
    return [r for r in alex_rows if index.loc[r.id, "nsites"] <= 8]


@pytest.fixture(scope="module")
def mp20_rows(shared_data):
    return list(read_source("mp20_csv", shared_data / "mp20" / "mp20_rows.csv"))


def _all(splits) -> pd.DataFrame:
    return pd.concat(splits.values(), ignore_index=True)


# ---------------------------------------------------------------- split
def test_split_of_fractions_seed_and_determinism():
    ids = [f"agm{k:09d}" for k in range(20_000)]
    got = pd.Series([split_of(i) for i in ids]).value_counts(normalize=True)
    assert got["train"] == pytest.approx(0.8, abs=0.01)
    assert got["val"] == pytest.approx(0.1, abs=0.01)
    assert got["test"] == pytest.approx(0.1, abs=0.01)
    assert [split_of(i) for i in ids[:200]] == [split_of(i) for i in ids[:200]]
    moved = sum(split_of(i, seed=42) != split_of(i, seed=7) for i in ids[:2000])
    assert 600 < moved < 760  # independent draws differ with p = 1 - (.8² + .1² + .1²) = 0.34
    half = pd.Series([split_of(i, split=(0.5, 0.25, 0.25)) for i in ids]).value_counts(normalize=True)
    assert half["train"] == pytest.approx(0.5, abs=0.015)


def test_split_is_stable_when_rows_are_added_or_removed(small_rows):
    a, _ = curate(small_rows[:30])
    b, _ = curate(list(reversed(small_rows[15:45])))  # other rows, other order
    sa = _all(a).set_index("id")["split"]
    sb = _all(b).set_index("id")["split"]
    common = sa.index.intersection(sb.index)
    assert len(common) >= 14
    assert (sa[common] == sb[common]).all()
    assert all(sa[i] == split_of(i, 42) for i in sa.index)
    c, _ = curate(small_rows[:30], seed=1)
    sc = _all(c).set_index("id")["split"]
    assert (sc[sa.index] != sa).any()


@pytest.mark.parametrize("bad", [(0.8, 0.1), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)])
def test_bad_split_names_the_key(bad):
    with pytest.raises(ValueError, match="data.split"):
        curate([], split=bad)


# ---------------------------------------------------------------- filters
def test_e_hull_filter_is_strict_and_only_where_labelled(mp20_rows):
    rows = mp20_rows[:6]
    values = [0.0, 0.0999, 0.1, 0.5, math.nan, 0.05]
    rows = [r._replace(e_above_hull=e) for r, e in zip(rows, values)]
    splits, rej = curate(rows, e_hull_max=0.1)
    kept = _all(splits).set_index("id")
    assert set(kept.index) == {rows[i].id for i in (0, 1, 4, 5)}
    assert math.isnan(kept.loc[rows[4].id, "e_above_hull"])
    assert kept.loc[rows[1].id, "e_above_hull"] == pytest.approx(0.0999)
    reasons = rej.set_index("id")["reason"]
    assert set(reasons.index) == {rows[2].id, rows[3].id}
    assert "mp20_rows.csv row 2" in reasons[rows[2].id]
    assert "e_above_hull 0.1 eV/atom >= data.e_hull_max 0.1" in reasons[rows[2].id]


def test_max_atoms_is_inclusive_and_rejections_name_the_row(mp20_rows):
    n = {r.id: len(parse_structure(r.structure)) for r in mp20_rows}
    cut = sorted(n.values())[len(n) // 2]
    splits, rej = curate(mp20_rows, max_atoms=cut, dedupe=False)
    kept = _all(splits)
    assert set(kept["id"]) == {i for i, k in n.items() if k <= cut}
    assert any(n[i] == cut for i in kept["id"])  # inclusive
    assert (kept["n_atoms"] == kept["id"].map(n)).all()
    assert set(rej["id"]) == {i for i, k in n.items() if k > cut}
    for _, r in rej.iterrows():
        assert re.search(rf"mp20_rows\.csv row \d+ \(id {r['id']}\): {n[r['id']]} atoms "
                         rf"> data\.max_atoms {cut}", r["reason"])
    assert list(rej.columns) == REJECTED_COLUMNS and (rej["stage"] == "curate").all()


def test_n_max_counts_inequivalent_sites(mp20_rows):
    def n_ineq(r):
        s = parse_structure(r.structure)
        return len(SpacegroupAnalyzer(s, symprec=0.01).get_symmetrized_structure().equivalent_sites)

    counts = {r.id: n_ineq(r) for r in mp20_rows[:20]}
    splits, rej = curate(mp20_rows[:20], n_max=4, dedupe=False)
    assert set(_all(splits)["id"]) == {i for i, k in counts.items() if k < 4}
    assert set(rej["id"]) == {i for i, k in counts.items() if k >= 4} != set()
    assert rej["reason"].str.contains("symmetry-inequivalent sites .* data.n_max 4").all()


def test_output_schema_and_cif_roundtrip(mp20_rows, shared_data):
    ref = pd.read_csv(shared_data / "mp20" / "mp20_rows.csv").set_index("material_id")
    splits, rej = curate(mp20_rows)
    assert len(rej) == 0
    df = _all(splits)
    assert list(df.columns) == OUTPUT_COLUMNS and len(df) == 44
    assert df["n_atoms"].dtype == "int64" and df["spacegroup"].dtype == "int64"
    assert (df["spacegroup"] == df["id"].map(ref["spacegroup.number"])).all()
    assert (df["formula"] == df["id"].map(ref["pretty_formula"])).all()
    assert df["e_above_hull"].to_numpy() == pytest.approx(df["id"].map(ref["e_above_hull"]).to_numpy())
    for name, part in splits.items():
        assert (part["split"] == name).all() and part["id"].is_monotonic_increasing
    s = Structure.from_str(df["cif"].iloc[0], fmt="cif")
    assert len(s) == df["n_atoms"].iloc[0]


# ---------------------------------------------------------------- dedupe
def _rotated_translated(s: Structure) -> Structure:
    t = s.copy()
    t.apply_operation(SymmOp.from_axis_angle_and_translation((1, 2, 3), 37.0, translation_vec=(0.3, -1.1, 2.0)))
    t.translate_sites(range(len(t)), (0.13, 0.41, 0.77), frac_coords=True, to_unit_cell=True)
    return Structure.from_sites(list(reversed(t.sites)))  # other site order too


def test_duplicates_removed_keeping_first_by_id(small_rows):
    rows = small_rows[:6]
    orig = rows[2]
    s = parse_structure(orig.structure)
    extra = [
        orig._replace(id="zz-same-structure", loc="copy A"),              # exact copy, other id
        orig._replace(id="zz-rotated", structure=_rotated_translated(s), loc="copy B"),
        orig._replace(loc="copy C"),                                      # same id again
    ]
    splits, rej = curate(rows + extra)
    kept = set(_all(splits)["id"])
    assert kept == {r.id for r in rows}
    reasons = rej.groupby("id")["reason"].apply(list)
    assert "structural duplicate of " + orig.id in reasons["zz-same-structure"][0]
    assert "structural duplicate of " + orig.id in reasons["zz-rotated"][0]
    assert reasons[orig.id] == [f"copy C (id {orig.id}): duplicate id; the first row with it is kept"]

    # a copy whose id sorts first is the one kept
    splits, rej = curate(rows + [orig._replace(id="aa-rotated", structure=_rotated_translated(s))])
    assert "aa-rotated" in set(_all(splits)["id"]) and orig.id in set(rej["id"])
    # dedupe=False keeps structural copies
    splits, _ = curate(rows + extra[:2], dedupe=False)
    assert len(_all(splits)) == 8


def test_shards_give_the_rows_of_one_unsharded_run(tmp_path, small_rows):
    """Issue 25: curation in shards (bounded memory per job) keeps and rejects exactly what one
    job does, structural duplicates across shards included (each copy below lands elsewhere)."""
    from crystalrl.data.curate import shard_of
    rows = small_rows[:60]
    copies = []
    for i, orig in enumerate(rows[:5]):
        s = parse_structure(orig.structure)
        copies += [orig._replace(id=f"copy-{i}-{j}", structure=_rotated_translated(s).to(fmt="cif"), loc=f"copy {i}/{j}")
                   for j in range(3)]
        copies.append(orig._replace(loc=f"same id {i}"))
    src = tmp_path / "src"
    src.mkdir()
    allrows = rows + copies
    pd.DataFrame({"material_id": [r.id for r in allrows], "cif": [r.structure for r in allrows]}).to_csv(
        src / "rows.csv", index=False)
    assert len({shard_of(r.id, 4) for r in copies}) > 1
    data = {"source": "mp20_csv", "path": str(src), "n_shards": 4}
    one = {k: tmp_path / "one" / f"{k}.parquet" for k in ("train", "val", "test", "rejected")}
    run_stage("curate", {}, one, dict(data={**data, "n_shards": 1}, n_max=21))
    shards = {k: [str(tmp_path / "shards" / f"{k}_{i}.parquet") for i in range(4)] for k in ("kept", "rejected")}
    for i in range(4):
        run_stage("curate_shard", {}, {k: shards[k][i] for k in shards}, dict(data=data, n_max=21, shard=i))
    assert all(len(pd.read_parquet(p)) < len(rows) for p in shards["kept"])  # each job holds its share only
    sharded = {k: tmp_path / "sharded" / f"{k}.parquet" for k in one}
    run_stage("curate", shards, sharded, dict(data=data, n_max=21), log=tmp_path / "merge.log")
    for k in ("train", "val", "test"):
        a, b = (pd.read_parquet(x[k]).sort_values("id", ignore_index=True) for x in (one, sharded))
        pd.testing.assert_frame_equal(a, b, obj=k)
    ra, rb = (pd.read_parquet(x["rejected"]).sort_values(["id", "reason"], ignore_index=True) for x in (one, sharded))
    pd.testing.assert_frame_equal(ra, rb)
    assert (ra["reason"].str.contains("structural duplicate")).sum() == 15 and ra["reason"].str.contains("duplicate id").sum() == 5


# ---------------------------------------------------------------- bad input
CORRUPTIONS = {
    "no_cell_a": lambda t: re.sub(r"_cell_length_a.*\n", "", t),
    "binary_garbage": lambda t: "\x00\x01 not a cif at all\n",
    "truncated": lambda t: t[: t.index("_atom_site_occupancy") + 25],
    "bad_number": lambda t: t.replace("_cell_length_a   ", "_cell_length_a   x"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupted_cif_is_one_rejected_row(tmp_path, small_rows, kind):
    rows = small_rows[:8]
    for r in rows:
        (tmp_path / f"{r.id}.cif").write_text(r.structure)
    bad = rows[3]
    (tmp_path / f"{bad.id}.cif").write_text(CORRUPTIONS[kind](bad.structure))
    splits, rej = curate(read_source("cif_dir", tmp_path))
    assert set(_all(splits)["id"]) == {r.id for r in rows} - {bad.id}
    assert len(rej) == 1 and rej["id"][0] == bad.id
    assert str(tmp_path / f"{bad.id}.cif") in rej["reason"][0]
    assert "could not parse structure" in rej["reason"][0]


def test_a_three_file_source_keeps_its_own_split(tmp_path, small_rows):
    """Issue 25: the authors' Alex-20 comes as train/val/test CSVs; re-splitting it by a hash
    moved ~20% of a published model's training crystals into val/test, where they counted as
    novel. The files' split is kept (split_by auto/source); `hash` re-splits on request."""
    rows = small_rows[:30]
    mine = {r.id: ("train", "val", "test")[i % 3] for i, r in enumerate(rows)}  # not what the hash gives
    assert sum(split_of(rid) != sp for rid, sp in mine.items()) >= 15
    for sp in ("train", "val", "test"):
        pd.DataFrame({"material_id": [r.id for r in rows if mine[r.id] == sp],
                      "cif": [r.structure for r in rows if mine[r.id] == sp]}).to_csv(tmp_path / f"{sp}.csv", index=False)
    out = {k: tmp_path / f"{k}.parquet" for k in ("train", "val", "test", "rejected")}
    for split_by in ("auto", "source"):
        run_stage("curate", {}, out, dict(data={"source": "alex20_csv", "path": str(tmp_path), "split_by": split_by},
                                          n_max=21), log=tmp_path / "curate.log")
        kept = {rid: sp for sp in ("train", "val", "test") for rid in pd.read_parquet(out[sp])["id"]}
        assert len(kept) >= 25 and all(mine[rid] == sp for rid, sp in kept.items())
        assert "split as the source gives it" in (tmp_path / "curate.log").read_text()
    run_stage("curate", {}, out, dict(data={"source": "alex20_csv", "path": str(tmp_path), "split_by": "hash"}, n_max=21))
    hashed = {rid: sp for sp in ("train", "val", "test") for rid in pd.read_parquet(out[sp])["id"]}
    assert all(split_of(rid) == sp for rid, sp in hashed.items()) and hashed != kept


def test_unknown_element_is_rejected_at_curation(tmp_path, small_rows):
    """pymatgen reads `Xx` as a dummy species; such a row once stayed in train.parquet (the novelty reference)."""
    rows = small_rows[:6]
    for r in rows:
        (tmp_path / f"{r.id}.cif").write_text(r.structure)
    bad = rows[2]
    sym = parse_structure(bad.structure).composition.elements[0].symbol
    text = re.sub(rf"(?m)^(\s*){sym}(\d*\s)", r"\1Xx\2", bad.structure)  # every site label and type symbol
    (tmp_path / f"{bad.id}.cif").write_text(text)
    assert "Xx" in {str(getattr(e, "symbol", e)) for e in parse_structure(text).composition.elements}
    splits, rej = curate(read_source("cif_dir", tmp_path))
    assert bad.id not in set(_all(splits)["id"]) and list(rej["id"]) == [bad.id]
    assert "unknown element(s) Xx" in rej["reason"][0]


def test_curation_that_leaves_a_split_empty_stops_naming_the_source(tmp_path, small_rows):
    for r in small_rows[:3]:
        (tmp_path / "cifs").mkdir(exist_ok=True)
        (tmp_path / "cifs" / f"{r.id}.cif").write_text(r.structure)
    out = {k: tmp_path / f"{k}.parquet" for k in ("train", "val", "test", "rejected")}
    cfg = {"source": "cif_dir", "path": str(tmp_path / "cifs"), "max_atoms": 4}
    with pytest.raises(ValueError, match=r"data source 'cif_dir' \(.*cifs\) left train \d+, val \d+, test \d+ rows") as e:
        run_stage("curate", {}, out, dict(data=cfg, n_max=21), log=tmp_path / "curate.log")
    assert "every split needs rows" in str(e.value)
    assert "rejected" in (tmp_path / "curate.log").read_text()  # the common reasons are logged
    assert not any(p.exists() for p in out.values())


# ---------------------------------------------------------------- parallel + full set
@pytest.mark.slow
def test_parallel_matches_serial(small_rows):
    rows = small_rows[:24] + [small_rows[0]._replace(id="zz-copy")]
    s1, r1 = curate(rows, processes=1)
    s2, r2 = curate(rows, processes=2, chunk_size=5)
    for k in s1:
        pd.testing.assert_frame_equal(s1[k], s2[k])
    pd.testing.assert_frame_equal(r1.sort_values("id", ignore_index=True),
                                  r2.sort_values("id", ignore_index=True))


@pytest.mark.slow
def test_full_alexandria_sample(alex_rows, index):
    splits, rej = curate(alex_rows, processes=2)
    df = _all(splits).set_index("id")
    assert len(df) + len(rej) == 1980
    # every CIF parses; the only rejections are the structures above 20 atoms
    too_big = set(index.index[index["nsites"] > 20])
    assert set(rej["id"]) == too_big and len(too_big) == 73
    assert rej["reason"].str.contains(r"\d+ atoms > data\.max_atoms 20").all()
    assert not rej["reason"].str.contains("could not parse").any()
    frac = df["split"].value_counts(normalize=True)
    assert frac["train"] == pytest.approx(0.8, abs=0.03)
    assert frac["val"] == pytest.approx(0.1, abs=0.02) and frac["test"] == pytest.approx(0.1, abs=0.02)
    assert (df["spacegroup"] == index.loc[df.index, "spg_symprec0p1"]).all()
    assert (df["formula"] == index.loc[df.index, "formula"]).all()
    assert (df["n_atoms"] == index.loc[df.index, "nsites"]).all()


# ---------------------------------------------------------------- the download and curate stages
def test_download_then_curate_stages_write_parquets(tmp_path, shared_data):
    import hashlib
    src = shared_data / "mp20" / "mp20_rows.csv"
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    cfg = {"source": "mp20_csv", "path": str(tmp_path / "raw"), "urls": [src.as_uri()],
           "sha256": {"mp20_rows.csv": sha}, "max_atoms": 10, "e_hull_max": 0.1,
           "split": [0.8, 0.1, 0.1], "seed": 42, "dedupe": True}
    run_stage("download", {}, dict(path=cfg["path"]), dict(urls=cfg["urls"], sha256=cfg["sha256"]))
    out = {k: tmp_path / "data" / f"{k}.parquet" for k in ("train", "val", "test", "rejected")}
    run_stage("curate", dict(source=[cfg["path"]]), out, dict(data=cfg, n_max=21), log=tmp_path / "curate.log")
    assert (tmp_path / "raw" / "mp20_rows.csv").exists()
    frames = {k: pd.read_parquet(p) for k, p in out.items()}
    counts = {k: len(v) for k, v in frames.items()}
    assert sum(len(frames[k]) for k in ("train", "val", "test")) + counts["rejected"] == 44
    assert counts["rejected"] > 0 and (frames["train"]["n_atoms"] <= 10).all()
    assert list(frames["rejected"].columns) == REJECTED_COLUMNS
    assert "curate:" in (tmp_path / "curate.log").read_text()


# (A missing data.source is no longer an error here: the schema's default, alex20_csv, fills it.)
@pytest.mark.parametrize("cfg,key", [({"source": "materials_project", "path": "x"}, "data.source"),
                                     ({"source": "alex20_csv"}, "data.path"),
                                     ({"source": "alex20_csv", "urls": ["file:///x.csv"]}, "data.path")])
def test_curate_stage_bad_config_names_the_key(tmp_path, cfg, key):
    out = {k: tmp_path / f"{k}.parquet" for k in ("train", "val", "test", "rejected")}
    with pytest.raises(ValueError, match=re.escape(key)):
        run_stage("curate", {}, out, dict(data=cfg, n_max=21))
    assert not any(p.exists() for p in out.values())


def test_workflow_script(tmp_path, shared_data, repo_root):
    """The rule script under Snakemake's calling convention (a `snakemake` object, Namedlist-like files)."""
    out = {k: str(tmp_path / f"{k}.parquet") for k in ("train", "val", "test", "rejected")}
    smk = SimpleNamespace(
        params=dict(data={"source": "mp20_csv", "max_atoms": 6,
                          "path": str(shared_data / "mp20" / "mp20_rows.csv")}, n_max=21),
        output=out, log=[str(tmp_path / "log.txt")], threads=1, input={})
    runpy.run_path(str(repo_root / "workflow" / "scripts" / "curate.py"), init_globals={"snakemake": smk})
    train = pd.read_parquet(out["train"])
    assert len(train) > 0 and (train["n_atoms"] <= 6).all()
    assert (tmp_path / "log.txt").read_text().count("curate:") >= 2

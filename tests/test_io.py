"""Atomic writers: a failed write leaves the old artifact intact and no temp files behind."""
import pytest

from crystalrl.io import atomic_dir, write_parquet_atomic


def test_atomic_dir_replaces_and_survives_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"

    with atomic_dir(target) as d:  # replacing a non-empty directory
        (d / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]

    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "c.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dirs left


def test_parquet_write_failure_keeps_old_file(tmp_path):
    import pandas as pd

    path = tmp_path / "t.parquet"
    write_parquet_atomic(pd.DataFrame({"x": [1, 2]}), path)
    with pytest.raises(Exception):
        write_parquet_atomic(pd.DataFrame({"x": [object()]}), path)  # pyarrow cannot encode it
    assert pd.read_parquet(path)["x"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]

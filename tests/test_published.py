"""Published CrystalFormer checkpoints: read without running code, check config, import, download.

Checkpoints are built in the exact published format (tests/published_format.py):
the paper config with random parameters and the small reference config with the
reference parameters. Nothing touches the network: downloads come from a local
http.server.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from published_format import random_haiku_params, write_published

from crystalrl.data.download import DownloadError
from crystalrl.model import likelihood as lk
from crystalrl.model.config import ModelConfig
from crystalrl.model.haiku_import import ConfigMismatch
from crystalrl.model.published import load_haiku_params, load_published, read_params
from crystalrl.model.published import (CheckpointError, checkpoint_url, fetch_checkpoint,
                                       import_checkpoint, read_checkpoint)
from crystalrl.model.store import build_model, load_model, read_model_meta
from crystalrl.model.transformer import count_params

TERMS = ("logp_w", "logp_xyz", "logp_a", "logp_l")


def _small_cfg(shared_reference) -> ModelConfig:
    return ModelConfig.from_dict(json.loads((shared_reference / "crystalformer_small_config.json").read_text()))


def _logp(model, ref, n=None, x64=False):
    sl = slice(None, n)
    with jax.enable_x64(x64):
        if x64:
            nnx.update(model, jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), nnx.state(model, nnx.Param)))
        t = lk.logp_terms_jit(model, *(ref[k][sl] for k in ("G", "L", "XYZ", "A", "W")))
        return {k: np.asarray(v) for k, v in t.items()}


@pytest.fixture(scope="module")
def mini(shared_reference):
    return dict(np.load(shared_reference / "crystalformer_logp_mini.npz"))


@pytest.fixture(scope="module")
def small_ckpt(shared_reference, tmp_path_factory):
    """The reference small params as the public code's pickle (numpy arrays)."""
    flat = read_params(shared_reference / "crystalformer_small_params.npz")
    return write_published(tmp_path_factory.mktemp("small") / "epoch_000300.pkl", flat, steps=3)


@pytest.mark.slow
def test_paper_config_import_equals_haiku_path(tmp_path, mini):
    """Paper config (4,833,575 params), jax arrays in the pickle: pickle -> model dir ->
    load_model gives the likelihood of load_haiku_params on the same values to 1e-6."""
    cfg = ModelConfig.from_dict({})
    flat = random_haiku_params(cfg, seed=3)
    assert sum(a.size for a in flat.values()) == 4_833_575
    np.savez(tmp_path / "haiku.npz", **flat)
    pkl = write_published(tmp_path / "epoch_005500.pkl", flat, as_jax=True)

    meta = import_checkpoint(pkl, tmp_path / "base", cfg, source="https://example.org/epoch_005500.pkl")
    assert meta["n_params"] == 4_833_575 and meta["epoch"] == 5500 and meta["adam_count"] == 2
    assert meta["sha256"] == hashlib.sha256(pkl.read_bytes()).hexdigest()
    assert read_model_meta(tmp_path / "base")["published"]["sha256"] == meta["sha256"]
    imported, cfg2 = load_model(tmp_path / "base")
    assert cfg2 == cfg and count_params(imported) == 4_833_575

    direct = build_model(cfg)
    nnx.update(direct, load_haiku_params(tmp_path / "haiku.npz", cfg))
    a, b = _logp(imported, mini, n=16), _logp(direct, mini, n=16)
    for k in TERMS:
        assert np.all(np.isfinite(a[k])) and np.ptp(a[k]) > 0, k
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, rtol=0, err_msg=k)


def test_small_config_import_reproduces_public_code(small_ckpt, tmp_path, shared_reference, mini):
    """The reference params, imported from a published-format pickle, give the public code's
    likelihoods (1e-4, float64) and those of load_haiku_params (1e-6)."""
    cfg = _small_cfg(shared_reference)
    import_checkpoint(small_ckpt, tmp_path / "base", cfg)
    imported, _ = load_model(tmp_path / "base")
    direct = build_model(cfg)
    nnx.update(direct, load_haiku_params(shared_reference / "crystalformer_small_params.npz", cfg))
    a, b = _logp(imported, mini, x64=True), _logp(direct, mini, x64=True)
    for k in TERMS:
        np.testing.assert_allclose(a[k], mini[k], atol=1e-4, rtol=0, err_msg=k)
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, rtol=0, err_msg=k)
    # load_published of the .pkl itself takes the same reader
    via_file, _ = load_published(small_ckpt, cfg)
    np.testing.assert_array_equal(np.asarray(via_file.head.kernel), np.asarray(imported.head.kernel))


def test_reader_runs_no_code_and_survives_moved_optax_classes(small_ckpt, tmp_path, shared_reference):
    """A callable named by the pickle is never called; optax classes that moved since the
    file was written (plain pickle.load fails on them) do not stop the import."""
    obj = pickle.loads(small_ckpt.read_bytes())
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    obj["opt_state"] = (obj["opt_state"], Evil())
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(obj))
    ckpt = read_checkpoint(evil)
    with np.load(shared_reference / "crystalformer_small_params.npz") as z:
        assert not marker.exists() and ckpt.adam_count == 3 and set(ckpt.params) == set(z.files)

    moved = tmp_path / "epoch_000300.pkl"
    data = small_ckpt.read_bytes()
    assert b"optax._src.transform" in data
    moved.write_bytes(data.replace(b"optax._src.transform", b"optax._src.moved_old"))
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(moved.read_bytes())
    ckpt = read_checkpoint(moved)
    assert ckpt.epoch == 300 and ckpt.adam_count == 3
    assert all(type(a) is np.ndarray and a.dtype == np.float32 for a in ckpt.params.values())


def test_broken_files_name_the_file(small_ckpt, tmp_path):
    data = small_ckpt.read_bytes()
    cases = {
        "truncated.pkl": (data[: len(data) // 2], "truncated"),
        "page.pkl": (b"<!DOCTYPE html>\n<html><body>CrystalFormer</body></html>", "HTML page"),
        "lfs.pkl": (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n", "Git LFS pointer"),
        "text.pkl": (b"epoch t_loss v_loss\n1 2.0 3.0\n", "not a pickle"),
        "empty.pkl": (b"", "empty file"),
        "list.pkl": (pickle.dumps([1, 2]), "not the dict"),
        "noparams.pkl": (pickle.dumps({"state": 1, "opt_state": ()}), "no 'params'"),
        "leaf.pkl": (pickle.dumps({"params": {"linear": {"w": "abc"}}}), "linear/w is a str"),
        "other_model.pkl": (pickle.dumps({"params": {"mlp": {"w": np.ones((2, 2), np.float32)}}}),
                            "not a CrystalFormer"),
    }
    for name, (payload, why) in cases.items():
        p = tmp_path / name
        p.write_bytes(payload)
        with pytest.raises(CheckpointError, match=why) as err:
            read_checkpoint(p)
        assert str(p) in str(err.value), name
    with pytest.raises(FileNotFoundError, match="absent.pkl"):
        read_checkpoint(tmp_path / "absent.pkl")
    nan = random_haiku_params(_tiny(), seed=0)
    nan["linear_2/w"][0, 0] = np.nan
    with pytest.raises(CheckpointError, match="linear_2/w holds NaN"):
        read_checkpoint(write_published(tmp_path / "nan.pkl", nan))


def _tiny(**kw) -> ModelConfig:
    return ModelConfig.from_dict(dict(num_layers=2, num_heads=2, key_size=8, model_size=16,
                                      embed_size=8, h0_size=16, **kw))


def test_other_config_names_every_differing_key(small_ckpt, tmp_path, shared_reference):
    cfg = _small_cfg(shared_reference)
    paper = ModelConfig.from_dict({})
    with pytest.raises(ConfigMismatch) as err:
        import_checkpoint(small_ckpt, tmp_path / "base", paper)
    msg = str(err.value)
    assert "num_layers (checkpoint 4, config 16)" in msg and "num_heads*key_size (checkpoint 256, config 1024)" in msg
    assert str(small_ckpt) in msg and not (tmp_path / "base").exists()
    other = ModelConfig.from_dict({**cfg.to_dict(), "Nf": 4, "Kl": 3, "embed_size": 16, "h0_size": 0,
                                   "widening_factor": 2, "dropout_rate": 0.3})
    with pytest.raises(ConfigMismatch) as err:
        import_checkpoint(small_ckpt, tmp_path / "base", other)
    for key in ("Nf (checkpoint 5, config 4)", "Kl (checkpoint 4, config 3)", "embed_size (checkpoint 32, config 16)",
                "h0_size (checkpoint 256, config 0)", "widening_factor (checkpoint 4, config 2)"):
        assert key in str(err.value)
    assert "dropout" not in str(err.value)  # dropout rates leave no trace in the parameters
    # the pre-0.4.1 model (learned positional embeddings, e.g. the MP-20 checkpoint) is named as such
    old = dict(read_params(small_ckpt), **{"~/positional_embeddings": np.zeros((105, 64), np.float32)})
    with pytest.raises(ConfigMismatch, match="< 0.4.1"):
        read_checkpoint(write_published(tmp_path / "mp20.pkl", old))


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    httpd = HTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_keeps_checksum(http_root, small_ckpt, tmp_path, shared_reference):
    root, base = http_root
    (root / "alex20" / "PBE").mkdir(parents=True)
    (root / "alex20" / "PBE" / "epoch_000300.pkl").write_bytes(small_ckpt.read_bytes())
    want = hashlib.sha256(small_ckpt.read_bytes()).hexdigest()
    url = f"{base}/alex20/PBE/epoch_000300.pkl"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch_checkpoint(url, tmp_path / "dl" / "bad.pkl", sha256="0" * 64)
    assert not (tmp_path / "dl" / "bad.pkl").exists()
    path, sha = fetch_checkpoint(url, tmp_path / "dl" / "epoch_000300.pkl")
    assert sha == want
    meta = import_checkpoint(path, tmp_path / "base", _small_cfg(shared_reference), sha256=sha, source=url)
    stored = read_model_meta(tmp_path / "base")["published"]
    assert stored["sha256"] == want and stored["source"] == url and stored["epoch"] == meta["epoch"] == 300
    # a local path is copied with the same checksum; the wrong one is refused at import too
    local, sha_local = fetch_checkpoint(str(small_ckpt), tmp_path / "dl" / "local.pkl")
    assert sha_local == want
    with pytest.raises(CheckpointError, match="sha256"):
        import_checkpoint(local, tmp_path / "base2", _small_cfg(shared_reference), sha256="1" * 64)


def test_checkpoint_urls():
    assert checkpoint_url("alex20") == \
        "https://huggingface.co/zdcao/CrystalFormer/resolve/main/alex20/PBE/epoch_005500.pkl"
    assert checkpoint_url("https://huggingface.co/zdcao/CrystalFormer/blob/main/alex20/RL-ehull/epoch_000195.pkl") \
        == "https://huggingface.co/zdcao/CrystalFormer/resolve/main/alex20/RL-ehull/epoch_000195.pkl"
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        checkpoint_url("alex21")


_CRAFTED = textwrap.dedent('''
    import pickle, resource, sys
    import numpy as np
    from crystalrl.model.config import ModelConfig
    from crystalrl.model.published import ArrayLimits, CheckpointError, read_checkpoint

    folder = sys.argv[1]
    cfg = ModelConfig.from_dict(dict(num_layers=2, num_heads=2, key_size=8, model_size=16, embed_size=8, h0_size=16))
    ArrayLimits.for_config(cfg)  # warm up what the reader computes once, then cap the address space
    vm = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize"))) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (768 << 20), vm + (768 << 20)))
    try:
        np.ones(1 << 30)  # 8 GB: the cap holds
        print("CAP NOT ENFORCED")
    except MemoryError:
        pass
    for name in sys.argv[2:]:
        try:
            read_checkpoint(f"{folder}/{name}", cfg, sha256="0" * 64 if name == "pinned.pkl" else None)
            print("READ", name)
        except CheckpointError as exc:
            print("REFUSED", name, "::", str(exc)[:400])
        except MemoryError:
            print("MEMORY", name)
''')


def test_crafted_pickles_are_refused_within_bounded_memory(tmp_path, repo_root):
    """Issue 23: a list of a million references to one 1 MB object made the error message build a
    ~1e12-byte repr; a 94-byte pickle calling numpy.ndarray allocated any size. Under an address-space
    cap of 768 MB above the interpreter, each is a CheckpointError naming the file."""

    class Call:
        def __init__(self, fn, *args):
            self.fn, self.args = fn, args

        def __reduce__(self):
            return self.fn, self.args

    big = b"x" * (1 << 20)
    files = {
        "refs.pkl": pickle.dumps([big] * (1 << 20), protocol=4),  # top level a list: the repr bomb
        "refs_keys.pkl": pickle.dumps({("k" * 1000, i): big for i in range(2000)}, protocol=4),
        "ndarray.pkl": pickle.dumps({"params": Call(np.ndarray, (10 ** 11,), "f8")}, protocol=4),
        "reconstruct.pkl": pickle.dumps(Call(np._core.multiarray._reconstruct, np.ndarray, (10 ** 11,), b"b")),
        "object_dtype.pkl": pickle.dumps({"params": {"m": {"w": np.array([None, 1], dtype=object)}}}),
        "pinned.pkl": pickle.dumps({"params": Call(np.ndarray, (10 ** 11,), "f8")}),
    }
    assert len(files["ndarray.pkl"]) < 200 and len(files["refs.pkl"]) < 4 << 20
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", _CRAFTED, str(tmp_path), *files], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    out = proc.stdout
    assert proc.returncode == 0 and "CAP NOT ENFORCED" not in out, proc.stderr[-3000:]
    lines = {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith(("REFUSED", "READ", "MEMORY"))}
    assert set(lines) == set(files), out
    for name in files:
        assert lines[name].startswith("REFUSED") and str(tmp_path / name) in lines[name], lines[name]
    assert "holds a list of length 1,048,576" in lines["refs.pkl"]
    assert "more than the largest parameter" in lines["ndarray.pkl"]
    assert "more than the largest parameter" in lines["reconstruct.pkl"]
    assert "not a plain numeric" in lines["object_dtype.pkl"]
    assert "sha256" in lines["pinned.pkl"] and "not unpickled" in lines["pinned.pkl"]


def test_a_named_checkpoint_can_be_pinned_to_a_revision():
    assert checkpoint_url("alex20", "3f2a9c1") == \
        "https://huggingface.co/zdcao/CrystalFormer/resolve/3f2a9c1/alex20/PBE/epoch_005500.pkl"

"""Published CrystalFormer checkpoints: fetch, read without running their code, import.

The public code (deepmodeling/CrystalFormer, `crystalformer/src/checkpoint.py`)
writes `epoch_%06d.pkl` with `pickle.dump({"params": params, "opt_state": opt_state})`
(protocol 4). `params` is Haiku's `{module: {param: array}}` of jax.Arrays in
float32 (its pmapped step returns them with `out_axes=None`, so without a device
axis); `opt_state` is the state of `optax.chain(clip_by_global_norm, scale_by_adam,
scale_by_schedule, scale)`: a tuple of optax NamedTuples. The authors publish the
Alex-20 base model and two PPO fine-tunes (`PUBLISHED`).

Unpickling a file can run any code the file names, so `read_checkpoint` does not
use `pickle.load`: its unpickler resolves only numpy's array reconstruction and
jax.Array's (read back as a numpy array, so a GPU-written file loads on a CPU and
never touches a device); every other class or function the file names (optax's
state, ...) becomes an inert `Opaque` record, never imported or called. That
also makes the reader independent of where optax keeps its classes today.

Memory is bounded too: every array the file declares is checked against the model
config's parameter shapes before numpy allocates it (`ArrayLimits`), only plain
numeric dtypes are rebuilt, and error messages describe untrusted objects by type
and length, never by their repr. A pinned sha256 is checked before unpickling; the
file's sha256 is computed over the very bytes unpickled and kept in the imported
model's `meta.json`, so a run records which file it trusted.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flax import nnx

from crystalrl.model.config import ModelConfig
from crystalrl.model.hub import PUBLISHED, checkpoint_url  # noqa: F401 - re-exported
from crystalrl.model.haiku_import import ConfigMismatch, check_config, import_into, infer_config
from crystalrl.model.store import build_model, save_model
from crystalrl.model.transformer import CrystalFormer

_LOG = logging.getLogger("crystalrl.published")

FORMAT = "CrystalFormer Haiku pickle {'params', 'opt_state'}"


class CheckpointError(ValueError):
    """A file that is not a readable published checkpoint; the message names the file."""


# ---------------------------------------------------------------------- safe unpickling
class Opaque:
    """Inert stand-in for an object of a class the reader does not import.

    Holds what the pickle would have passed to the class (`args`, `kwargs`, `state`)
    so that, e.g., optax's Adam step count stays readable.
    """

    module: str = "?"
    name: str = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, []
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def append(self, item):  # a list subclass in the pickle
        self.items.append(item)

    def extend(self, items):
        self.items.extend(items)

    def __setitem__(self, key, value):  # a dict subclass in the pickle
        self.items.append((key, value))

    def __repr__(self):
        return f"<opaque {self.module}.{self.name}>"


def _from_jax_pickle(fun, args, arr_state, aval_state):
    """jax.Array's pickle (`jax._src.array._reconstruct_array`) read as a numpy array."""
    arr = fun(*args)
    arr.__setstate__(arr_state)
    return arr


_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric")
_KINDS = "biufc"  # bool, integer, unsigned, float, complex: never object or structured arrays


class _TooLarge(ValueError):
    """An array the checkpoint declares is larger than the configured model allows."""


@dataclass(frozen=True)
class ArrayLimits:
    """What a checkpoint of one model config may hold: the largest parameter's size
    (`per_array` elements; Adam's moments share the shapes) and, over all arrays,
    `total` elements (parameters and two Adam moments, with room to spare)."""

    per_array: int
    total: int

    @classmethod
    def for_config(cls, cfg: ModelConfig) -> "ArrayLimits":
        model = nnx.eval_shape(lambda: CrystalFormer(cfg, rngs=nnx.Rngs(0)))
        import jax
        sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
        return cls(per_array=max(sizes), total=4 * sum(sizes) + 1024)


class _Budget:
    """Counts the elements of every array the unpickler creates, before it allocates them."""

    def __init__(self, limits: ArrayLimits):
        self.limits, self.used = limits, 0

    def take(self, shape, dtype=None) -> None:
        try:
            dims = tuple(int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        except (TypeError, ValueError):
            raise _TooLarge(f"an array shape that is not a tuple of integers ({type(shape).__name__})") from None
        if len(dims) > 8 or any(d < 0 for d in dims):
            raise _TooLarge(f"an array of {len(dims)} dimensions or a negative size")
        n = 1
        for d in dims:
            n *= d
        if dtype is not None:
            _check_dtype(dtype)
        if n > self.limits.per_array:
            raise _TooLarge(f"an array of {n:,} elements, more than the largest parameter of the configured "
                            f"model ({self.limits.per_array:,}); if the file is of a larger model, set the "
                            "'model:' section to its config")
        self.used += n
        if self.used > self.limits.total:
            raise _TooLarge(f"arrays of more than {self.limits.total:,} elements in all, more than the configured "
                            "model's parameters and Adam moments")


def _check_dtype(dtype) -> np.dtype:
    d = dtype if isinstance(dtype, np.dtype) else None
    if d is None or d.hasobject or d.kind not in _KINDS or d.fields is not None:
        raise _TooLarge(f"an array of dtype {str(d)[:40] if d is not None else type(dtype).__name__}, "
                        "not a plain numeric one")
    return d


def _guarded_numpy(budget: _Budget) -> dict[str, Any]:
    """numpy's array reconstruction functions, each checking the size it is asked for first."""
    from numpy._core import multiarray, numeric

    class Array(np.ndarray):
        """What the pickle's `numpy.ndarray` becomes: sizes are checked before any allocation."""

        def __new__(cls, shape, dtype=float, *args, **kwargs):  # ndarray(shape) called by REDUCE
            budget.take(shape, np.dtype(dtype))
            return np.ndarray(shape, dtype, *args, **kwargs)

        def __setstate__(self, state):  # BUILD after _reconstruct: (version, shape, dtype, fortran, data)
            if not isinstance(state, tuple) or len(state) not in (4, 5):
                raise _TooLarge("an array state of an unknown form")
            shape, dtype, _fortran, data = state[-4:]
            budget.take(shape, dtype)
            if not isinstance(data, (bytes, bytearray)):
                raise _TooLarge(f"array data given as {type(data).__name__}, not bytes")
            np.ndarray.__setstate__(self, state)

    def dtype(obj, align=False, copy=False):
        if not isinstance(obj, str) or len(obj) > 8:
            raise _TooLarge("a dtype that is not a short type code")
        return _check_dtype(np.dtype(obj, align, copy))

    def reconstruct(subtype, shape, typecode):
        if subtype is not Array:
            raise _TooLarge("an array of a class other than numpy.ndarray")
        budget.take(shape)
        return multiarray._reconstruct(Array, shape, typecode)

    def frombuffer(buf, dtype, shape, order):
        budget.take(shape, dtype)
        return numeric._frombuffer(buf, dtype, shape, order)

    def scalar(dtype, *args):
        return multiarray.scalar(_check_dtype(dtype), *args)

    return {"ndarray": Array, "dtype": dtype, "_reconstruct": reconstruct, "_frombuffer": frombuffer,
            "scalar": scalar}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves numpy/jax array reconstruction only, within `limits`; anything else becomes an Opaque."""

    _opaque: dict[tuple[str, str], type] = {}

    def __init__(self, file, limits: ArrayLimits):
        super().__init__(file)
        self._numpy = _guarded_numpy(_Budget(limits))

    def find_class(self, module: str, name: str):
        if module in _NUMPY_MODULES and name in self._numpy:
            return self._numpy[name]
        if (module, name) == ("jax._src.array", "_reconstruct_array"):
            return _from_jax_pickle
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles
            import _codecs
            return _codecs.encode
        if (module, name) in (("collections", "OrderedDict"), ("builtins", "set"),
                              ("builtins", "frozenset"), ("builtins", "complex")):
            return pickle.Unpickler.find_class(self, module, name)
        key = (module[:200], name[:200])
        if key not in self._opaque:
            self._opaque[key] = type(key[1], (Opaque,), {"module": key[0], "name": key[1]})
        return self._opaque[key]


def safe_loads(data: bytes, limits: ArrayLimits | None = None) -> Any:
    """Unpickle `data` with numpy arrays as the only live objects (see the module doc), each
    within `limits` (default: those of the paper's model config)."""
    limits = limits or ArrayLimits.for_config(ModelConfig.from_dict({}))
    return _SafeUnpickler(io.BytesIO(data), limits).load()


def _kind(obj: Any) -> str:
    """A bounded description of an untrusted object: its type, and its length where it has one."""
    n = len(obj) if isinstance(obj, (list, tuple, dict, set, frozenset, str, bytes)) else None
    return f"{type(obj).__name__}" + (f" of length {n:,}" if n is not None else "")


def _short(obj: Any) -> str:
    """A dict key or module name from the file, shortened (never a full repr of an untrusted object)."""
    return repr(obj[:60]) if isinstance(obj, str) else f"<{_kind(obj)}>"


# ---------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint read from `path`: flat Haiku params and provenance."""

    path: Path
    sha256: str
    params: dict[str, np.ndarray]  # {"module/param": float array}
    epoch: int | None  # from the file name epoch_%06d.pkl
    adam_count: int | None  # optimizer steps recorded in opt_state (Adam's count)
    shapes: dict[str, int]  # what the shapes fix of the config (haiku_import.infer_config)

    def meta(self) -> dict[str, Any]:
        """JSON-able provenance (for the model directory's meta.json)."""
        return dict(format=FORMAT, file=str(self.path), sha256=self.sha256, epoch=self.epoch,
                    adam_count=self.adam_count, n_params=int(sum(a.size for a in self.params.values())),
                    shapes=self.shapes)


def _why_unreadable(path: Path, data: bytes, exc: BaseException) -> str:
    head = data[:64]
    size = f"{len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}..."
    if not data:
        return f"{path}: empty file, not a checkpoint"
    if head.startswith(b"version https://git-lfs"):
        return f"{path}: a Git LFS pointer ({size}), not the checkpoint: fetch the file itself"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return (f"{path}: an HTML page ({size}), not a checkpoint; a Hugging Face link must "
                "use /resolve/, not /blob/")
    if head.startswith(b"PK"):
        return f"{path}: a zip archive ({size}), not a pickle (an .npz must end in .npz)"
    if head[:1] != b"\x80":
        return f"{path}: not a pickle file (starts with {head[:16]!r}; {size})"
    if isinstance(exc, EOFError) or "truncated" in str(exc):
        return (f"{path}: truncated pickle ({size}): the file ends before the checkpoint does; "
                "download it again")
    return f"{path}: corrupt pickle ({type(exc).__name__}: {exc}; {size})"


def _flat_params(obj: Any, path: Path) -> dict[str, np.ndarray]:
    """`obj["params"]` flattened to {"module/param": array}, every leaf checked."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {_kind(obj)}, not the dict "
                              "{'params': ..., 'opt_state': ...} the public CrystalFormer code writes")
    if "params" not in obj:
        keys = [_short(k) for k in itertools.islice(obj, 10)]
        raise CheckpointError(f"{path}: a dict with keys {', '.join(keys)}{', ...' if len(obj) > 10 else ''} "
                              "but no 'params' (expected {'params': ..., 'opt_state': ...})")
    params = obj["params"]
    if not isinstance(params, Mapping) or not params:
        raise CheckpointError(f"{path}: 'params' is a {type(params).__name__}, not Haiku's "
                              "non-empty dict {module: {param: array}}")
    flat = {}
    for mod, leaves in params.items():
        if not isinstance(leaves, Mapping):
            raise CheckpointError(f"{path}: params[{_short(mod)}] is a {type(leaves).__name__}, not a "
                                  "dict {param: array} (Haiku's layout)")
        for name, arr in leaves.items():
            if not isinstance(mod, str) or not isinstance(name, str):
                raise CheckpointError(f"{path}: parameter names must be strings, got {_short(mod)}/{_short(name)}")
            key = f"{mod[:100]}/{name[:100]}"
            if isinstance(arr, Opaque):
                raise CheckpointError(f"{path}: parameter {key} is a {arr.module}.{arr.name} "
                                      "object, not an array; the reader only rebuilds numpy/jax arrays")
            if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
                raise CheckpointError(f"{path}: parameter {key} is a {type(arr).__name__} "
                                      f"{getattr(arr, 'dtype', '')}, not a float array")
            arr = np.asarray(arr)  # the unpickler's guarded subclass -> a plain ndarray (a view)
            if not np.isfinite(arr).all():
                raise CheckpointError(f"{path}: parameter {key} holds NaN or inf")
            flat[key] = arr
    return flat


def _adam_count(opt_state: Any) -> int | None:
    """Adam's step count from an opt_state read as Opaque records (None if absent)."""
    stack = [opt_state]
    while stack:
        x = stack.pop()
        if isinstance(x, Opaque):
            if x.name == "ScaleByAdamState" and x.args:
                try:
                    return int(np.asarray(x.args[0]))
                except (TypeError, ValueError):
                    return None
            stack.extend(x.args)
        elif isinstance(x, (tuple, list)):
            stack.extend(x)
    return None


def read_checkpoint(path: str | os.PathLike, cfg: ModelConfig | None = None, *,
                    sha256: str | None = None) -> Checkpoint:
    """Read a published checkpoint (see the module doc) without running code from it.

    `sha256` given: the file's bytes must have it, checked before anything is unpickled.
    `cfg`: the model config the file is for (default: the paper's); no array may be
    larger than its largest parameter, nor all of them together larger than its
    parameters and Adam moments, checked before each array is allocated, so a crafted
    file cannot exhaust memory. Raises FileNotFoundError for a missing file and
    CheckpointError, naming the file, for a checksum mismatch, an empty, truncated,
    non-pickle (HTML page, LFS pointer, zip), oversized or ill-shaped file (not
    {'params': {module: {param: float array}}}, or not CrystalFormer's parameter
    names); ConfigMismatch for a pre-0.4.1 checkpoint. Parameters come back as numpy
    arrays whatever array type (numpy or jax, any device) the writer pickled.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"published checkpoint not found: {path}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise CheckpointError(f"{path}: sha256 {digest} != expected {sha256.lower()}; the file was not "
                              "unpickled. Delete it to download it again, or correct the pinned sha256.")
    limits = ArrayLimits.for_config(cfg or ModelConfig.from_dict({}))
    try:
        obj = safe_loads(data, limits)
    except _TooLarge as exc:
        raise CheckpointError(f"{path}: declares {exc}; refused before allocating it") from None
    except Exception as exc:  # noqa: BLE001 - every unpickling failure gets the same clear report
        raise CheckpointError(_why_unreadable(path, data, exc)) from exc
    params = _flat_params(obj, path)
    try:
        shapes = infer_config(params, source=str(path))
    except ConfigMismatch:
        raise
    except KeyError as exc:  # not CrystalFormer's parameter names or shapes
        raise CheckpointError(str(exc.args[0])) from None
    m = re.search(r"epoch_(\d+)\.pkl$", path.name)
    return Checkpoint(path=path, sha256=digest, params=params,
                      epoch=int(m.group(1)) if m else None,
                      adam_count=_adam_count(obj.get("opt_state")), shapes=shapes)


# ---------------------------------------------------------------------- fetching
def fetch_checkpoint(source: str, dest: str | os.PathLike, *, sha256: str | None = None, revision: str | None = None,
                     lock: str | os.PathLike | None = None, retries: int = 3, timeout: float = 120) -> tuple[Path, str]:
    """Download (or copy) `source` to `dest` with retries and a checksum -> (dest, sha256).

    `sha256` given: a file with another checksum is refused (and not kept). Without
    it the checksum of what arrived is returned, to be recorded: pickles can run code,
    so a run should say which bytes it trusted.
    """
    from crystalrl.data.download import download, sha256sum
    path = download(checkpoint_url(source, revision), dest, sha256=sha256, lock=lock, retries=retries, timeout=timeout)
    return path, sha256sum(path)


# ---------------------------------------------------------------------- importing
def read_params(path: str | os.PathLike, cfg: ModelConfig | None = None) -> dict[str, np.ndarray]:
    """Flat {'module/param': array} from an .npz or a public checkpoint pickle.

    Pickles go through `read_checkpoint`, which does not run code from the file and
    raises a clear error for truncated, non-pickle or ill-shaped files.
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    return read_checkpoint(path, cfg).params


def load_haiku_params(path: str | os.PathLike, cfg: ModelConfig) -> nnx.State:
    """The nnx.Param state of a CrystalFormer(cfg) holding the Haiku params at `path`.

    Use as `nnx.update(model, load_haiku_params(path, cfg))`.
    """
    model = nnx.eval_shape(lambda: CrystalFormer(cfg, rngs=nnx.Rngs(0)))
    import_into(model, read_params(path, cfg), source=str(path))
    return nnx.state(model, nnx.Param)


def load_published(path: str | os.PathLike, cfg: ModelConfig) -> tuple[CrystalFormer, ModelConfig]:
    """A model holding the parameters of a public CrystalFormer file (`.pkl`/`.npz`) -> (model, cfg).

    Those files carry no config: `cfg` is the run's `model:` section, checked against
    the parameter shapes (ConfigMismatch names every differing key)."""
    model = build_model(cfg)  # a whole model (RNG streams too), ready to sample or train
    import_into(model, read_params(path, cfg), source=str(path))
    return model, cfg


def import_checkpoint(path: str | os.PathLike, model_dir: str | os.PathLike, cfg: ModelConfig, *,
                      sha256: str | None = None, source: str | None = None,
                      log: logging.Logger | None = None) -> dict[str, Any]:
    """Write the published checkpoint at `path` as a crystalrl model directory.

    `cfg` is the run's `model:` section: the checkpoint must have been written for
    it (ConfigMismatch naming every differing key otherwise; dropout rates are free).
    `sha256` given: the file must have it. `source` (URL or name) goes into meta.json
    with the file's sha256, epoch and Adam step count. Returns that meta.
    """
    log = log or _LOG
    ckpt = read_checkpoint(path, cfg, sha256=sha256)
    check_config(ckpt.params, cfg, source=f"published checkpoint {path}")
    model = nnx.eval_shape(lambda: build_model(cfg))  # shapes only: every value is imported
    import_into(model, ckpt.params, source=str(path))
    meta = dict(ckpt.meta(), source=source or str(path))
    save_model(model_dir, model, cfg, {"published": meta})
    log.info("imported %s (epoch %s, %d parameters, sha256 %s) into %s", meta["source"],
             ckpt.epoch, meta["n_params"], ckpt.sha256, model_dir)
    return meta


__all__ = ["PUBLISHED", "ArrayLimits", "Checkpoint", "CheckpointError", "ConfigMismatch", "Opaque", "checkpoint_url",
           "fetch_checkpoint", "import_checkpoint", "load_haiku_params", "load_published", "read_checkpoint",
           "read_params", "safe_loads"]

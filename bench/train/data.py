"""Datasets for rnnbench: loading, seeded splits, standardisation, minibatches.

Every loader returns a `Dataset` of batch-first float arrays ``x`` of shape
(N, T, I) and int64 class labels ``y`` of shape (N,), split into
train/val/test by a fixed seeded split, and standardised per input feature
with statistics of the TRAINING split only (so nothing about val/test leaks
into the preprocessing). Loaders return float64; use `Dataset.astype`.

Variable-length sequences
-------------------------
Sequences of different lengths are stored right-padded with zeros to a common
T, with ``lengths[i]`` (1 <= lengths[i] <= T) the number of real steps, so
sequence i is ``x[i, :lengths[i]]``; ``lengths=None`` means all are full
length. Padding is exact for our models, not an approximation: the RNN is
causal, so its hidden state after step ``lengths[i]`` is computed from the
real steps only and never sees the padding after it, and the classifier reads
exactly that state (``h`` at step ``lengths[i]``, i.e. output index
``lengths[i] - 1``; the backends take ``lengths=`` in ``forward``), not the
state at step T. Padding values therefore cannot change any output or
gradient. We still keep padded positions exactly 0 (statistics skip them and
standardisation re-zeroes them, whatever a file held there) so the arrays are
clean, finite and identical for identical real data.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

DATASETS = ("digits", "digits-pixels", "synthetic")


@dataclass(frozen=True, eq=False)  # eq=False: == on arrays is ambiguous
class Dataset:
    """Train/val/test arrays of one task; see the module docstring for lengths."""

    name: str
    x_train: np.ndarray  # (N_train, T, I) float
    y_train: np.ndarray  # (N_train,) int64
    x_val: np.ndarray  # (N_val, T, I)
    y_val: np.ndarray  # (N_val,)
    x_test: np.ndarray  # (N_test, T, I)
    y_test: np.ndarray  # (N_test,)
    num_classes: int
    lengths_train: np.ndarray | None = None  # (N_train,) int64 in [1, T]
    lengths_val: np.ndarray | None = None
    lengths_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Catch inconsistent hand-built datasets here rather than deep in a backend.
        for part in ("train", "val", "test"):
            x, y, lengths = self.split(part)
            if x.ndim != 3 or x.shape[1:] != self.x_train.shape[1:]:
                raise ValueError(f"x_{part} has shape {x.shape}; expected (N, {self.seq_len}, "
                                 f"{self.input_size}) like x_train")
            if y.shape != (len(x),) or (lengths is not None and lengths.shape != (len(x),)):
                raise ValueError(f"y_{part}/lengths_{part} must have shape ({len(x)},)")

    @property
    def input_size(self) -> int:
        return int(self.x_train.shape[2])

    @property
    def seq_len(self) -> int:
        """Padded length T, shared by all splits."""
        return int(self.x_train.shape[1])

    def split(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(x, y, lengths) of part 'train', 'val' or 'test'."""
        return (getattr(self, f"x_{part}"), getattr(self, f"y_{part}"),
                getattr(self, f"lengths_{part}"))

    def astype(self, dtype) -> Dataset:
        """Copy with the three x arrays cast to `dtype`; labels and lengths unchanged."""
        return replace(self, x_train=self.x_train.astype(dtype),
                       x_val=self.x_val.astype(dtype), x_test=self.x_test.astype(dtype))


def _part_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for a group of `count`, giving each non-empty part >= 1 when possible."""
    n_val, n_test = round(count * val_fraction), round(count * test_fraction)
    if test_fraction > 0 and count >= 2:
        n_test = max(n_test, 1)
    if val_fraction > 0 and count >= 2 + (test_fraction > 0):
        n_val = max(n_val, 1)
    while n_val + n_test >= count and n_val + n_test > 0:  # train keeps at least one
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def split_indices(n: int, *, val_fraction: float, test_fraction: float, seed: int,
                  labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (train_idx, val_idx, test_idx), each sorted int64, disjoint, covering range(n).

    With `labels`, the split is stratified: each class is split separately in
    the given proportions, and every class with enough members (>= 3 for
    three non-empty parts) appears in every part.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val_fraction, test_fraction and their sum < 1; "
                         f"got {val_fraction}, {test_fraction}")
    if n < 1:
        raise ValueError(f"cannot split {n} samples")
    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.arange(n)]
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]  # sorted: deterministic
    parts: tuple[list, list, list] = ([], [], [])
    for members in groups:
        n_val, n_test = _part_sizes(len(members), val_fraction, test_fraction)
        test, val, train = np.split(rng.permutation(members), [n_test, n_test + n_val])
        for chosen, part in zip((train, val, test), parts):
            part.append(chosen)
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train, val, test


def valid_mask(lengths: np.ndarray | None, n: int, seq_len: int) -> np.ndarray:
    """(N, T) bool, True at real (non-padded) steps."""
    if lengths is None:
        return np.ones((n, seq_len), dtype=bool)
    return np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]


def feature_stats(x: np.ndarray,
                  lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (mean, std), float64 (I,), over all samples and real steps of x (N, T, I)."""
    steps = x[valid_mask(lengths, *x.shape[:2])].astype(np.float64)  # (M, I)
    mean, std = steps.mean(axis=0), steps.std(axis=0)
    # A constant feature has std 0, or rounding noise ~eps*|mean|; dividing by
    # that would turn the noise into huge values, so use 1 (feature becomes 0).
    constant = std <= 1e3 * np.finfo(np.float64).eps * np.abs(mean)
    return mean, np.where(constant, 1.0, std)


def standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray,
                lengths: np.ndarray | None = None) -> np.ndarray:
    """(x - mean) / std at real steps, exactly 0 at padded ones; float x keeps its dtype."""
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    with np.errstate(invalid="ignore"):  # padding may hold NaN/inf; it is zeroed below
        out = (x.astype(np.float64) - mean) / std  # (N, T, I)
    out[~valid_mask(lengths, *x.shape[:2])] = 0.0
    return out.astype(dtype, copy=False)


Part = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # (x, y, lengths)


def _take(part: Part, idx: np.ndarray) -> Part:
    x, y, lengths = part
    return x[idx], y[idx], None if lengths is None else lengths[idx]


def _standardized_dataset(name: str, train: Part, val: Part, test: Part,
                          num_classes: int) -> Dataset:
    mean, std = feature_stats(train[0], train[2])  # training statistics only
    xs = [standardize(x, mean, std, lengths) for x, _, lengths in (train, val, test)]
    return Dataset(name=name, x_train=xs[0], y_train=train[1], x_val=xs[1], y_val=val[1],
                   x_test=xs[2], y_test=test[1], num_classes=int(num_classes),
                   lengths_train=train[2], lengths_val=val[2], lengths_test=test[2])


def _split_dataset(name: str, full: Part, num_classes: int, seed: int,
                   val_fraction: float = 0.2, test_fraction: float = 0.2) -> Dataset:
    idx = split_indices(len(full[0]), val_fraction=val_fraction, test_fraction=test_fraction,
                        seed=seed, labels=full[1])
    return _standardized_dataset(name, *(_take(full, i) for i in idx), num_classes)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8), labels (N,)): the file scikit-learn ships, read as its load_digits
    reads it (rows of 64 pixels, then the label), without importing scikit-learn (~3 s
    here, 2 % of the quick preset's budget); load_digits itself if the file has moved."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package, runs none of it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits  # shipped data, no download

        bunch = load_digits()
        return bunch.images.astype(np.float64), bunch.target.astype(np.int64)
    table = np.loadtxt(path, delimiter=",")  # (N, 65)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_digits_rows(seed: int = 0) -> Dataset:
    """sklearn's 8x8 digits, one image row per step: x (N, 8, 8); split 60/20/20."""
    images, y = _digits()
    return _split_dataset("digits", (images, y, None), 10, seed)


def load_digits_pixels(seed: int = 0) -> Dataset:
    """Harder variant: one pixel per step in row-major order, x (N, 64, 1)."""
    images, y = _digits()
    x = images.reshape(len(images), 64, 1)  # (N, 64, 1)
    return _split_dataset("digits-pixels", (x, y, None), 10, seed)


def random_sequences(batch_size: int, seq_len: int, input_size: int, *, seed: int,
                     dtype=np.float32) -> np.ndarray:
    """Standard normal x (batch_size, seq_len, input_size) for throughput runs."""
    dtype = np.dtype(dtype)
    native = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)
    x = np.random.default_rng(seed).standard_normal((batch_size, seq_len, input_size), dtype=native)
    return x.astype(dtype, copy=False)


def random_labels(batch_size: int, num_classes: int, *, seed: int) -> np.ndarray:
    """Uniform int64 labels in [0, num_classes), shape (batch_size,)."""
    return np.random.default_rng(seed).integers(0, num_classes, size=batch_size, dtype=np.int64)


_PROTOTYPE_SEED = 0x5EED


def _prototypes(num_classes: int, input_size: int) -> np.ndarray:
    """(C, I) class prototypes of norm sqrt(I); fixed per shape, independent of any seed."""
    rng = np.random.default_rng([_PROTOTYPE_SEED, num_classes, input_size])
    if num_classes <= input_size:  # orthogonal: every pair equally far apart
        q, _ = np.linalg.qr(rng.standard_normal((input_size, num_classes)))
        protos = q.T  # (C, I), orthonormal rows
    else:
        protos = rng.standard_normal((num_classes, input_size))
    return protos * np.sqrt(input_size) / np.linalg.norm(protos, axis=1, keepdims=True)


def make_synthetic_task(n: int, seq_len: int, *, input_size: int = 8, num_classes: int = 4,
                        signal_steps: int = 1, noise: float = 0.5, position: str = "start",
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable task whose difficulty grows with seq_len. Returns x (n, T, I) float64, y (n,).

    Construction:
      * each class c has a prototype p_c in R^I of norm sqrt(I) (orthogonal
        prototypes when num_classes <= input_size, else random directions).
        Prototypes depend only on (num_classes, input_size), not on `seed`, so
        calls with different seeds draw fresh samples of the SAME task;
      * labels are balanced: a seeded shuffle of (0..n-1) mod num_classes;
      * the first `signal_steps` steps are x[i, t] = p_{y_i} + noise * N(0, 1);
      * every later step is pure N(0, 1) noise, independent of the label.
      (position="end": the signal steps are the LAST ones instead, after the noise: the
      easy case for a forward RNN, the hard one for a reverse direction alone.)
    The label is thus decided only by the start of the sequence: a nearest-
    prototype rule on x[:, 0] is almost always right (with the defaults), but
    an RNN classifying from its last state must carry that information across
    seq_len - signal_steps noise steps, which vanishing gradients make hard as
    seq_len grows.
    """
    if not 1 <= signal_steps <= seq_len:
        raise ValueError(f"signal_steps must be in [1, seq_len={seq_len}], got {signal_steps}")
    if position not in ("start", "end"):
        raise ValueError(f"position must be 'start' or 'end', got {position!r}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)  # (N,)
    x = rng.standard_normal((n, seq_len, input_size))  # (N, T, I) distractor noise
    signal = slice(0, signal_steps) if position == "start" else slice(seq_len - signal_steps, seq_len)
    x[:, signal] *= noise
    x[:, signal] += _prototypes(num_classes, input_size)[y][:, None, :]  # (N, 1, I)
    return x, y


def load_synthetic(seq_len: int = 20, n: int = 2000, input_size: int = 8,
                   num_classes: int = 4, seed: int = 0, position: str = "start") -> Dataset:
    """`make_synthetic_task` split 60/20/20 and standardised; lengths None."""
    x, y = make_synthetic_task(n, seq_len, input_size=input_size,
                               num_classes=num_classes, seed=seed, position=position)
    name = "synthetic" if position == "start" else "synthetic-end"
    return _split_dataset(name, (x, y, None), num_classes, seed)


def pad_with_noise(dataset: Dataset, seq_len: int, *, seed: int) -> Dataset:
    """The same task followed by N(0, 1) distractor steps up to `seq_len` (after
    standardisation, so the noise has the features' own scale): the label is still decided
    by the original steps, which a classifier reading its last state must now carry across
    seq_len - T steps. Full-length sequences only (the distractors are real steps)."""
    if dataset.lengths_train is not None:
        raise ValueError("pad_with_noise needs full-length sequences (lengths None)")
    if seq_len <= dataset.seq_len:
        return dataset
    rng = np.random.default_rng([seed, seq_len])

    def padded(x):
        noise = rng.standard_normal((x.shape[0], seq_len - x.shape[1], x.shape[2]))  # (N, T' - T, I)
        return np.concatenate([x, noise.astype(x.dtype)], axis=1)  # (N, T', I)

    return replace(dataset, name=f"{dataset.name}+noise{seq_len}", x_train=padded(dataset.x_train),
                   x_val=padded(dataset.x_val), x_test=padded(dataset.x_test))


_NPZ_FORMS = {  # required keys -> optional keys
    ("x_train", "y_train", "x_test", "y_test"): ("lengths_train", "lengths_test", "num_classes"),
    ("x", "y"): ("lengths", "num_classes"),
}
_NPZ_ACCEPTED = " OR ".join(f"{{{', '.join(req)}}} (optional {', '.join(opt)})"
                            for req, opt in _NPZ_FORMS.items())


_NPY_MAGIC, _ZIP_MAGIC, _PICKLE_PROTOCOL = b"\x93NUMPY", b"PK", b"\x80"


def read_plain_npz(path) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, never unpickling anything: what a file is decides
    the message (an .npy array, pickled data, random bytes, a damaged archive) before
    numpy reads it. ValueError for every kind of bad file."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_NPY_MAGIC):
        raise ValueError(f"{path}: expected an .npz archive (np.savez), got a single .npy array")
    if head.startswith(_PICKLE_PROTOCOL):
        raise ValueError(f"{path}: holds pickled data, which is refused for safety (never "
                         "unpickled); save arrays with np.savez")
    if not head.startswith(_ZIP_MAGIC):
        raise ValueError(f"{path}: not an .npz archive (no zip signature; save with np.savez)")
    try:
        archive = np.load(path, allow_pickle=False)
        with archive:
            arrays = {}
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as e:  # numpy refuses before unpickling
                    raise ValueError(f"{path}: key {key!r} holds an object array, which could "
                                     "only be read by unpickling; pickled/object arrays are "
                                     f"refused for safety (numpy: {e})") from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # truncated, corrupt
        raise ValueError(f"{path}: a damaged .npz archive ({type(e).__name__}: {e})") from e
    return arrays


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The data-set arrays of the archive, in one of the accepted key sets."""
    arrays = read_plain_npz(path)
    keys = set(arrays)
    forms = [req for req in _NPZ_FORMS if set(req) <= keys]
    if len(forms) != 1:
        raise ValueError(f"{path}: expected keys {_NPZ_ACCEPTED}; got {sorted(keys)}")
    unexpected = keys - set(forms[0]) - set(_NPZ_FORMS[forms[0]])
    if unexpected:  # likely a typo (e.g. 'lenghts'); silently ignoring it would mislead
        raise ValueError(f"{path}: unexpected keys {sorted(unexpected)}; "
                         f"accepted {_NPZ_ACCEPTED}")
    return arrays


def _as_int(a: np.ndarray, what: str) -> np.ndarray:
    """int64 copy of integer data; whole-number floats are accepted (labels saved as float)."""
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        return a.astype(np.int64)
    detail = " with non-whole or non-finite values" if a.dtype.kind == "f" else ""
    raise ValueError(f"{what} must hold integers (whole-number floats accepted), "
                     f"got dtype {a.dtype}{detail}")


def _check_part(arrays: dict, kx: str, ky: str, kl: str, where: str) -> Part:
    """Validated (x float64 (N, T, I), y int64 (N,), lengths int64 (N,) or None)."""
    x = arrays[kx]
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{where}: {kx} must hold real numbers (float or int), "
                         f"got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[:, :, None]  # (N, T) -> (N, T, 1): one scalar per time step
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"{where}: {kx} must be a non-empty 3-D (N, T, I) array (or 2-D (N, T) "
                         f"for I=1), got shape {arrays[kx].shape}")
    x = x.astype(np.float64)  # a fresh copy, safe to edit below
    n, t = x.shape[:2]
    y = arrays[ky]
    if y.shape != (n,):
        raise ValueError(f"{where}: {ky} must be 1-D with one label per sequence, shape ({n},); "
                         f"got shape {y.shape}")
    y = _as_int(y, f"{where}: {ky}")
    lengths = None
    if kl in arrays:
        if arrays[kl].shape != (n,):
            raise ValueError(f"{where}: {kl} must have shape ({n},), got {arrays[kl].shape}")
        lengths = _as_int(arrays[kl], f"{where}: {kl}")
        if lengths.min() < 1 or lengths.max() > t:
            raise ValueError(f"{where}: {kl} must lie in [1, T={t}], got range "
                             f"[{lengths.min()}, {lengths.max()}]")
    valid = valid_mask(lengths, n, t)
    bad = int((~np.isfinite(x[valid])).sum())
    if bad:
        raise ValueError(f"{where}: {kx} has {bad} NaN/inf values at real (non-padded) steps")
    x[~valid] = 0.0  # padding is never read by the model; store clean zeros whatever the file held
    return x, y, lengths


def _pad_steps(part: Part, seq_len: int) -> Part:
    """`part` right-padded with zeros to `seq_len` steps; its lengths are the file's, or
    (none given) every sequence's original length. Unchanged when already that long."""
    x, y, lengths = part
    n, t, input_size = x.shape
    if t == seq_len:
        return part
    padded = np.zeros((n, seq_len, input_size), dtype=x.dtype)  # (N, T_longer, I)
    padded[:, :t] = x
    return padded, y, np.full(n, t, dtype=np.int64) if lengths is None else lengths


def _num_classes(arrays: dict, labels: list[tuple[str, np.ndarray]], where: str) -> int:
    """num_classes from the file, else max(first labels) + 1; checks every label is in range."""
    for key, y in labels:
        if y.min() < 0:
            raise ValueError(f"{where}: {key} has negative label {y.min()}; "
                             "expected 0..num_classes-1")
    if "num_classes" in arrays:
        raw = arrays["num_classes"]
        if raw.size != 1:
            raise ValueError(f"{where}: num_classes must be a single integer, "
                             f"got shape {raw.shape}")
        num_classes = int(_as_int(raw.reshape(()), f"{where}: num_classes"))
        source = "from the file"
        if num_classes < 1:
            raise ValueError(f"{where}: num_classes must be >= 1, got {num_classes}")
    else:
        num_classes, source = int(labels[0][1].max()) + 1, f"inferred as max({labels[0][0]})+1"
    for key, y in labels:
        if y.max() >= num_classes:
            raise ValueError(f"{where}: {key} has label {y.max()} out of range for "
                             f"num_classes={num_classes} ({source})")
    return num_classes


def load_npz(path: str | Path, *, seed: int = 0, val_fraction: float = 0.2,
             test_fraction: float = 0.2) -> Dataset:
    """Load a user's .npz (never unpickled) as a Dataset named after the file stem.

    Key sets: x_train, y_train, x_test, y_test (validation carved from train by
    the seeded stratified split with `val_fraction`; `test_fraction` unused),
    with optional lengths_train, lengths_test; or x, y (split train/val/test),
    with optional lengths. Both take optional num_classes (else max train label
    + 1). x: (N, T, I) float or int, or (N, T) read as I=1; y: integer labels
    (whole-number floats accepted). Train and test must share I; a split with
    fewer steps is zero-padded to the other's T, its lengths taken from the file
    or, absent, its own T. Values past lengths are ignored and set to 0.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .npz file: {path}")
    arrays, where = _read_npz(path), str(path)
    if "x" in arrays:
        full = _check_part(arrays, "x", "y", "lengths", where)
        num_classes = _num_classes(arrays, [("y", full[1])], where)
        return _split_dataset(path.stem, full, num_classes, seed, val_fraction, test_fraction)
    train = _check_part(arrays, "x_train", "y_train", "lengths_train", where)
    test = _check_part(arrays, "x_test", "y_test", "lengths_test", where)
    if train[0].shape[2] != test[0].shape[2]:
        raise ValueError(f"{where}: x_train and x_test differ in input_size I: "
                         f"{train[0].shape[2]} vs {test[0].shape[2]}")
    # Archives (UEA/UCR style) pad each split to its own longest sequence: pad the shorter
    # split to the longer T. Exact, not approximate: the RNN is causal and reads each
    # sequence's state at its own length, never a padded step.
    seq_len = max(train[0].shape[1], test[0].shape[1])
    train, test = _pad_steps(train, seq_len), _pad_steps(test, seq_len)
    num_classes = _num_classes(arrays, [("y_train", train[1]), ("y_test", test[1])], where)
    idx_train, idx_val, _ = split_indices(len(train[0]), val_fraction=val_fraction,
                                          test_fraction=0.0, seed=seed, labels=train[1])
    return _standardized_dataset(path.stem, _take(train, idx_train), _take(train, idx_val),
                                 test, num_classes)


def load_dataset(spec: str, *, seed: int = 0) -> Dataset:
    """'digits', 'digits-pixels', 'synthetic', or a path ending in .npz."""
    loaders = {"digits": load_digits_rows, "digits-pixels": load_digits_pixels,
               "synthetic": load_synthetic}
    if spec in loaders:
        return loaders[spec](seed=seed)
    if str(spec).lower().endswith(".npz"):
        return load_npz(spec, seed=seed)
    raise ValueError(f"unknown dataset {spec!r}; choose one of {', '.join(DATASETS)} "
                     "or a path to a .npz file")


def iterate_minibatches(n: int, batch_size: int, *,
                        rng: np.random.Generator | int) -> Iterator[np.ndarray]:
    """Yield int index arrays covering range(n) once, in seeded random order.

    `rng` is a Generator (advanced, so successive epochs get new orders) or an
    int seed. The last batch keeps the remainder and may be smaller. Arguments
    are checked at call time, not at the first `next()`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if rng is None:  # an unseeded shuffle would make runs irreproducible
        raise ValueError("pass a np.random.Generator or an int seed as rng")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    order = rng.permutation(n)  # (n,)
    return (order[start:start + batch_size] for start in range(0, n, batch_size))

"""Tests for bench.train.data: loaders, splits, standardisation, .npz safety, batching."""

import pickle

import numpy as np
import pytest

from bench.train.data import (
    DATASETS,
    Dataset,
    feature_stats,
    iterate_minibatches,
    load_dataset,
    load_digits_pixels,
    load_digits_rows,
    load_npz,
    load_synthetic,
    make_synthetic_task,
    random_labels,
    random_sequences,
    split_indices,
    standardize,
    valid_mask,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_rows(seed=0)


def _splits(ds):
    return [ds.split(p) for p in ("train", "val", "test")]


# ----------------------------------------------------------------------------- digits

def test_digits_rows_shapes_and_dtypes(digits):
    assert digits.name == "digits" and digits.num_classes == 10
    assert (digits.seq_len, digits.input_size) == (8, 8)
    sizes = [len(x) for x, _, _ in _splits(digits)]
    assert sum(sizes) == 1797
    assert abs(sizes[0] - 0.6 * 1797) < 10 and abs(sizes[2] - 0.2 * 1797) < 10
    for x, y, lengths in _splits(digits):
        assert x.shape[1:] == (8, 8) and x.dtype == np.float64
        assert y.dtype == np.int64 and lengths is None
        assert set(np.unique(y)) == set(range(10))  # stratified: every class everywhere


def test_digits_read_from_the_shipped_file_equal_sklearns_load_digits():
    """_digits reads scikit-learn's file without importing scikit-learn: the same arrays."""
    from sklearn.datasets import load_digits

    from bench.train.data import _digits

    images, labels = _digits()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    assert images.dtype == np.float64 and labels.dtype == np.int64


def test_digits_pixels_shapes():
    ds = load_digits_pixels(seed=0)
    assert ds.name == "digits-pixels"
    assert (ds.seq_len, ds.input_size, ds.num_classes) == (64, 1, 10)
    assert sum(len(y) for _, y, _ in _splits(ds)) == 1797
    assert ds.x_test.dtype == np.float64 and ds.lengths_train is None


def test_digits_standardised_with_train_stats_only(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    images, target = raw.images.astype(np.float64), raw.target
    train, val, test = split_indices(len(target), val_fraction=0.2, test_fraction=0.2,
                                     seed=0, labels=target)
    np.testing.assert_array_equal(digits.y_val, target[val])
    flat = images[train].reshape(-1, 8)
    mean, std = flat.mean(0), flat.std(0)
    std[std == 0] = 1.0
    np.testing.assert_allclose(digits.x_test, (images[test] - mean) / std, atol=1e-12)
    np.testing.assert_allclose(digits.x_val, (images[val] - mean) / std, atol=1e-12)
    tr = digits.x_train.reshape(-1, 8)
    assert np.allclose(tr.mean(0), 0, atol=1e-10)
    nonconstant = images[train].reshape(-1, 8).std(0) > 0
    assert np.allclose(tr.std(0)[nonconstant], 1)
    assert not np.allclose(digits.x_val.reshape(-1, 8).mean(0), 0, atol=1e-6)


def test_astype_casts_x_only(digits):
    ds32 = digits.astype(np.float32)
    assert ds32.x_train.dtype == ds32.x_val.dtype == ds32.x_test.dtype == np.float32
    assert digits.x_train.dtype == np.float64  # original untouched
    assert ds32.y_train is digits.y_train and ds32.num_classes == 10
    np.testing.assert_allclose(ds32.x_test, digits.x_test, rtol=1e-6, atol=1e-6)


def test_dataset_rejects_inconsistent_shapes(digits):
    with pytest.raises(ValueError, match="x_val"):
        Dataset(name="bad", x_train=digits.x_train, y_train=digits.y_train,
                x_val=digits.x_val[:, :4], y_val=digits.y_val,
                x_test=digits.x_test, y_test=digits.y_test, num_classes=10)


# ----------------------------------------------------------------------------- splits

def test_split_deterministic_disjoint_covering_stratified():
    labels = np.random.default_rng(3).integers(0, 5, size=203)
    kw = dict(val_fraction=0.2, test_fraction=0.2, labels=labels)
    parts = split_indices(203, seed=7, **kw)
    for a, b in zip(parts, split_indices(203, seed=7, **kw)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(parts[0], split_indices(203, seed=8, **kw)[0])
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(203))
    for c in range(5):
        in_class = (labels == c).sum()
        counts = [(labels[p] == c).sum() for p in parts]
        assert min(counts) >= 1 and abs(counts[2] - 0.2 * in_class) <= 1


def test_split_small_class_reaches_every_part_and_unstratified():
    labels = np.array([0] * 20 + [1] * 3)
    train, val, test = split_indices(23, val_fraction=0.2, test_fraction=0.2, seed=0, labels=labels)
    assert all((labels[p] == 1).sum() == 1 for p in (train, val, test))
    train, val, test = split_indices(10, val_fraction=0.2, test_fraction=0.3, seed=1)
    assert (len(train), len(val), len(test)) == (5, 2, 3)
    with pytest.raises(ValueError, match="sum < 1"):
        split_indices(10, val_fraction=0.5, test_fraction=0.5, seed=0)


# ---------------------------------------------------------------------- standardising

def test_stats_skip_padding_and_padding_stays_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 7, 3))
    lengths = rng.integers(1, 8, size=50)
    mask = valid_mask(lengths, 50, 7)
    x[~mask] = 1e6  # garbage in padding must not affect the statistics
    x[:, :, 2] = np.where(mask, 5.0, x[:, :, 2])  # constant feature at real steps
    mean, std = feature_stats(x, lengths)
    np.testing.assert_allclose(mean[:2], x[mask][:, :2].mean(0))
    np.testing.assert_allclose(std[:2], x[mask][:, :2].std(0))
    assert std[2] == 1.0 and mean[2] == pytest.approx(5.0)
    z = standardize(x, mean, std, lengths)
    assert np.all(z[~mask] == 0) and np.all(z[mask][:, 2] == 0)
    np.testing.assert_allclose(z[mask].mean(0)[:2], 0, atol=1e-12)
    np.testing.assert_allclose(z[mask].std(0)[:2], 1)


# -------------------------------------------------------------------------- synthetic

def _nearest_centroid_accuracy(feat, y, num_classes):
    half = len(y) // 2
    centroids = np.stack([feat[:half][y[:half] == c].mean(0) for c in range(num_classes)])
    dist = ((feat[half:, None, :] - centroids[None]) ** 2).sum(-1)
    return (dist.argmin(1) == y[half:]).mean()


def test_synthetic_label_only_in_first_step():
    x, y = make_synthetic_task(2000, 30, seed=1)
    assert x.shape == (2000, 30, 8) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 4
    assert _nearest_centroid_accuracy(x[:, 0], y, 4) > 0.95
    assert _nearest_centroid_accuracy(x[:, -1], y, 4) < 0.32
    assert _nearest_centroid_accuracy(x[:, 1:].mean(1), y, 4) < 0.32
    # Same task for another seed: centroids learnt on seed 1 classify seed 2.
    x2, y2 = make_synthetic_task(2000, 30, seed=2)
    both = np.concatenate([x[:, 0], x2[:, 0]])
    assert _nearest_centroid_accuracy(both, np.concatenate([y, y2]), 4) > 0.95


def test_load_synthetic_and_random_data():
    ds = load_synthetic(seq_len=12, n=500, seed=0)
    assert (ds.seq_len, ds.input_size, ds.num_classes) == (12, 8, 4)
    assert sum(len(y) for _, y, _ in _splits(ds)) == 500
    x = random_sequences(4, 5, 3, seed=0)
    assert x.shape == (4, 5, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x, random_sequences(4, 5, 3, seed=0))
    assert random_sequences(4, 5, 3, seed=0, dtype=np.float16).dtype == np.float16
    labels = random_labels(100, 3, seed=0)
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1, 2}


# ------------------------------------------------------------------------ user's .npz

def _padded(n, t, i, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=n)
    x = rng.normal(size=(n, t, i))
    x[~valid_mask(lengths, n, t)] = 0.0
    return x, lengths


def test_npz_train_test_form_with_lengths(tmp_path):
    x_tr, l_tr = _padded(60, 9, 3, 0)
    x_te, l_te = _padded(20, 9, 3, 1)
    x_tr_file = x_tr.copy()
    x_tr_file[~valid_mask(l_tr, 60, 9)] = np.nan  # padding content must not matter
    y_tr, y_te = np.arange(60) % 3, np.arange(20) % 3
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x_tr_file, y_train=y_tr.astype(np.float32), x_test=x_te, y_test=y_te,
             lengths_train=l_tr, lengths_test=l_te)
    ds = load_npz(path, seed=4, val_fraction=0.25)
    assert ds.name == "mine" and ds.num_classes == 3 and ds.x_train.dtype == np.float64
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (45, 15, 20)
    np.testing.assert_array_equal(ds.y_test, y_te)
    np.testing.assert_array_equal(ds.lengths_test, l_te)
    for x, _, lengths in _splits(ds):
        assert np.all(x[~valid_mask(lengths, *x.shape[:2])] == 0) and np.isfinite(x).all()
    train, val, _ = split_indices(60, val_fraction=0.25, test_fraction=0.0, seed=4, labels=y_tr)
    mean, std = feature_stats(x_tr[train], l_tr[train])
    np.testing.assert_allclose(ds.x_test, standardize(x_te, mean, std, l_te))
    np.testing.assert_array_equal(ds.lengths_val, l_tr[val])
    assert load_dataset(str(path), seed=4).name == "mine"


def test_npz_single_form_2d_x_and_num_classes(tmp_path):
    x, lengths = _padded(100, 6, 1, 2)
    y = np.arange(100) % 4
    path = tmp_path / "flat.npz"
    np.savez(path, x=x[:, :, 0], y=y, lengths=lengths, num_classes=np.int64(7))
    ds = load_npz(path, seed=0)
    assert (ds.seq_len, ds.input_size, ds.num_classes) == (6, 1, 7)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (60, 20, 20)
    for x_part, y_part, l_part in _splits(ds):
        assert set(y_part.tolist()) == {0, 1, 2, 3}
        assert np.all(x_part[~valid_mask(l_part, *x_part.shape[:2])] == 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([ds.lengths_train, ds.lengths_val,
                                                          ds.lengths_test])), np.sort(lengths))


def _good_pair():
    rng = np.random.default_rng(0)
    return dict(x_train=rng.normal(size=(12, 5, 2)), y_train=np.arange(12) % 3,
                x_test=rng.normal(size=(6, 5, 2)), y_test=np.arange(6) % 3)


def _with(**changes):
    arrays = _good_pair()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    return arrays


NAN_X = np.where(np.eye(5)[None, :, :2] > 0, np.nan, 0.0).repeat(12, 0)  # (12, 5, 2)

BAD_FILES = [
    (_with(x_test=None), ": expected keys"),
    (dict(x=np.zeros((3, 2, 1)), y=np.zeros(3, int), **_good_pair()), ": expected keys"),
    (_with(lengths=np.ones(12, int)), "unexpected keys"),
    (_with(x_train=np.zeros((12, 5, 2, 1))), "3-D"),
    (_with(x_train=np.zeros(12)), "3-D"),
    (_with(x_train=np.full((12, 5, 2), "a")), "real numbers"),
    (_with(x_train=np.zeros((12, 5, 2), bool)), "real numbers"),
    (_with(x_train=np.zeros((12, 5, 2), complex)), "real numbers"),
    (_with(y_train=np.arange(12) / 2), "integers"),
    (_with(y_train=(np.arange(12) % 3).reshape(12, 1)), "1-D"),
    (_with(y_test=np.zeros(5, int)), "1-D"),
    (_with(y_train=np.arange(12) % 3 - 1), "negative"),
    (_with(y_test=np.arange(6) % 4), "out of range"),
    (_with(num_classes=np.int64(2)), "out of range"),
    (_with(num_classes=np.array([3, 4])), "single integer"),
    (_with(num_classes=np.float64(3.5)), "integers"),
    (_with(lengths_train=np.ones((12, 1), int)), "shape"),
    (_with(lengths_train=np.full(12, 2.5)), "integers"),
    (_with(lengths_train=np.zeros(12, int)), r"\[1, T=5\]"),
    (_with(lengths_test=np.full(6, 6)), r"\[1, T=5\]"),
    (_with(x_train=NAN_X), "NaN/inf"),
    (_with(x_test=np.full((6, 5, 2), np.inf)), "NaN/inf"),
    (_with(x_test=np.zeros((6, 5, 3))), "input_size"),
]


@pytest.mark.parametrize("arrays, match", BAD_FILES)
def test_npz_errors(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_npz(path)


def test_npz_accepts_nan_only_in_padding_and_whole_float_labels(tmp_path):
    arrays = _with(x_train=np.nan_to_num(NAN_X, nan=1.0), y_train=(np.arange(12) % 3) * 1.0)
    arrays["x_train"][:, 4] = np.nan  # only in padding: lengths <= 4
    arrays["lengths_train"] = np.full(12, 4)
    np.savez(tmp_path / "ok.npz", **arrays)
    ds = load_npz(tmp_path / "ok.npz")
    assert np.isfinite(ds.x_train).all() and ds.y_train.dtype == np.int64


def test_npz_missing_file_and_non_npz(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_npz(missing)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single .npy"):
        load_npz(tmp_path / "single.npy")


class _WritesMarker:
    """Unpickling this calls open(marker, 'w'), i.e. creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("key", ["x", "y", "num_classes"])
def test_npz_object_array_is_refused_not_executed(tmp_path, key):
    marker = tmp_path / "pwned"
    arrays = dict(x=np.zeros((10, 3, 2)), y=np.arange(10) % 2)
    arrays[key] = np.array([_WritesMarker(marker)], dtype=object)
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)  # allow_pickle defaults to True: the object array is pickled
    with pytest.raises(ValueError, match=rf"'{key}'.*pickled/object arrays are refused"):
        load_npz(path)
    assert not marker.exists()
    # Control: the payload really runs when unpickled, so the check above can fail.
    with np.load(path, allow_pickle=True) as archive:
        archive[key][0].close()
    assert marker.exists()


def test_raw_pickle_file_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(_WritesMarker(marker)))
    with pytest.raises(ValueError, match="refused for safety"):
        load_npz(path)
    assert not marker.exists()


# ------------------------------------------------------------------ dispatch, batches

def test_load_dataset_dispatch():
    assert DATASETS == ("digits", "digits-pixels", "synthetic")
    assert load_dataset("synthetic", seed=1).name == "synthetic"
    with pytest.raises(ValueError, match="digits-pixels"):
        load_dataset("mnist")


def test_minibatches_cover_once_and_are_seeded():
    batches = list(iterate_minibatches(103, 10, rng=5))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(103))
    again = list(iterate_minibatches(103, 10, rng=np.random.default_rng(5)))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = np.concatenate(list(iterate_minibatches(103, 10, rng=6)))
    assert not np.array_equal(np.concatenate(batches), other)
    gen = np.random.default_rng(0)
    first, second = (np.concatenate(list(iterate_minibatches(50, 8, rng=gen))) for _ in range(2))
    assert not np.array_equal(first, second)  # a shared Generator gives new epoch orders
    with pytest.raises(ValueError, match="batch_size"):
        iterate_minibatches(10, 0, rng=0)

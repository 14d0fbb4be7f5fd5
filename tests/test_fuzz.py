"""Property-based fuzzing (hypothesis) of everything a user hands rnnbench: .npz data sets,
params files, TOML configs, command lines and the arrays given to every backend.

The property, for every target: either it runs, or it ends in the project's one error — a
ValueError in the API, `rnnbench: error: ...` with exit status 2 on the command line —
never another exception, never a file written outside the run folder, never a changed
input array. CI runs the `ci` profile (a few hundred examples in all); `tox -e fuzz` runs
the `fuzz` profile (>= 1,000 per target) and prints each target's count.
"""
import dataclasses
import io
import os
import string
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import impls  # noqa: E402
from conftest import backend_or_skip  # noqa: E402

settings.register_profile("ci", max_examples=50, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz", parent=settings.get_profile("ci"), max_examples=1000)
settings.load_profile(os.environ.get("RNNBENCH_FUZZ_PROFILE", "ci"))


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


# ------------------------------------------------------------------ .npz data sets

DTYPES = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int8, np.uint8, np.bool_,
                          np.complex64, np.dtype("U3"), np.dtype([("a", "f4"), ("b", "i2")])])
KEYS = st.sampled_from(["x", "y", "lengths", "num_classes", "x_train", "y_train", "x_test", "y_test",
                        "lengths_train", "lengths_test", "lenghts", "z"])


@st.composite
def arrays_for(draw):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
    if np.dtype(dtype).kind in "fc":
        return draw(hnp.arrays(dtype, shape, elements=st.one_of(
            st.floats(-1e3, 1e3, width=16 if np.dtype(dtype).itemsize == 2 else 32),
            st.sampled_from([np.nan, np.inf, -np.inf]))))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def npz_contents(draw):
    contents = draw(st.dictionaries(KEYS, arrays_for(), max_size=7))
    if draw(st.booleans()):  # a well-formed core often, so the deeper checks are reached too
        n, t, i = draw(st.integers(1, 12)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
        contents.setdefault("x", draw(hnp.arrays(np.float64, (n, t, i), elements=st.floats(-5, 5))))
        contents.setdefault("y", draw(hnp.arrays(np.int64, (n,), elements=st.integers(-1, 4))))
        if draw(st.booleans()):
            contents["lengths"] = draw(hnp.arrays(np.int64, (n,), elements=st.integers(-1, t + 1)))
        if draw(st.booleans()) and contents["x"].ndim >= 2:
            contents["x"] = contents["x"][:, ::-1]  # non-contiguous
    if draw(st.booleans()):
        contents["obj"] = np.array([{"evil": 1}], dtype=object)
    return contents


@given(contents=npz_contents())
def test_fuzz_npz_loader(tmp_path_factory, contents):
    from bench.train.data import load_npz

    folder = tmp_path_factory.mktemp("npz")
    path = folder / "data.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's own warnings on odd dtypes are not our errors
        np.savez(path, **contents)
    before = files_under(folder)
    try:
        dataset = load_npz(path, seed=0)
    except ValueError:
        pass
    else:
        assert dataset.x_train.ndim == 3 and np.isfinite(dataset.x_train).all()
    assert files_under(folder) == before


@given(data=st.one_of(st.binary(max_size=300), st.builds(lambda a: b"PK\x03\x04" + a, st.binary(max_size=100))))
def test_fuzz_npz_bytes(tmp_path_factory, data):
    from bench.train.data import load_npz

    path = tmp_path_factory.mktemp("bytes") / "data.npz"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        load_npz(path)


# ------------------------------------------------------------------ params files

@st.composite
def params_contents(draw):
    sizes = draw(st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)))
    params = impls.init_params(*sizes, seed=0)
    for name in draw(st.lists(st.sampled_from(sorted(params)), max_size=3)):
        params[name] = draw(arrays_for())
    for name in draw(st.lists(st.sampled_from(sorted(params)), max_size=1)):
        params.pop(name, None)
    if draw(st.booleans()):
        params[draw(st.sampled_from(["extra", "W_xh_l1"]))] = np.zeros(2)
    return params


@given(params=params_contents())
def test_fuzz_params_files(tmp_path_factory, params):
    from bench.cli import load_params

    path = tmp_path_factory.mktemp("params") / "p.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.savez(path, **params)
    try:
        loaded = load_params(str(path))
    except ValueError:
        return
    impls.get("numpy").from_numpy({k: v.astype(np.float32) for k, v in loaded.items()})


# ------------------------------------------------------------------ TOML configs

SCALARS = st.one_of(st.integers(-3, 70), st.floats(-2, 3, allow_nan=False), st.booleans(),
                    st.text(string.ascii_letters + "_0123456789", max_size=8),
                    st.sampled_from(["numpy", "forward", "float32", "quick", "gpu"]))


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


@given(config=st.dictionaries(
    st.sampled_from(["preset", "impls", "phases", "batch_size", "seq_len", "input_size",
                     "hidden_size", "dtype", "threads", "accuracy", "input_equals_hidden",
                     "min_time_s", "extra", "bogus"]),
    st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=6))
def test_fuzz_toml_configs(tmp_path_factory, config):
    from bench.spec import build_grid, load_config

    path = tmp_path_factory.mktemp("toml") / "grid.toml"
    path.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in config.items()))
    try:
        loaded = load_config(path)
        grid = build_grid(loaded.pop("preset", None), **loaded)
    except ValueError:
        return
    assert all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in grid.batch_size)
    grid.cases(impls.names())


# ------------------------------------------------------------------ the command line

INT_TEXT = st.one_of(st.integers(-2, 3).map(str), st.sampled_from(["", "x", "1,2", "2.5", "1,,", "0"]))
FLAGS = {  # flag -> strategy of its value (None: a switch)
    "--impl": st.sampled_from(["numpy", "onnx_fp32", "torch", "nope", "numpy,nope", ""]),
    "--dataset": st.sampled_from(["digits", "synthetic", "nope", "missing.npz", "PARAMS"]),
    "--seed": INT_TEXT, "--dtype": st.sampled_from(["float32", "float64", "int8", "float32,float64"]),
    "--hidden-size": INT_TEXT, "--epochs": st.integers(-1, 2).map(str), "--lr": st.sampled_from(["0.01", "-1", "x", "0"]),
    "--optimizer": st.sampled_from(["adam", "sgd", "rmsprop"]), "--batch-size": INT_TEXT,
    "--save": st.sampled_from(["OUT/p.npz", "OUT/missing-dir/p.npz"]), "--params": st.sampled_from(["PARAMS", "missing.npz", "OUT"]),
    "--preset": st.sampled_from(["quick", "huge", ""]), "--config": st.sampled_from(["missing.toml", "PARAMS"]),
    "--phase": st.sampled_from(["forward", "backward,train_step", "nope", ""]),
    "--cell": st.sampled_from(["rnn_tanh", "lstm", "gru", "lstm,gru", "nope", ""]),
    "--seq-len": INT_TEXT, "--input-size": INT_TEXT, "--threads": st.sampled_from(["1", "999", "0", "a"]),
    "--out": st.sampled_from(["OUT/run", "OUT/run", "OUT"]), "--max-case-s": st.sampled_from(["1", "-1", "a"]),
    "--resume": None, "--force": None, "--no-accuracy": None, "--quiet": None, "--report": None,
    "--allow-oversubscribe": None,
    "--num-layers": INT_TEXT, "--bidirectional": None,
    "--dropout": st.sampled_from(["0", "0.3", "1", "-0.1", "x"]),
    "--weight-decay": st.sampled_from(["0", "1e-5", "-1", "x"]),
    "--clip-norm": st.sampled_from(["0", "1", "-1", "x"]), "--patience": INT_TEXT,
    "--schedule": st.sampled_from(["cosine", "step", "constant", "nope"]), "--warmup": INT_TEXT,
}
COMMAND_FLAGS = {  # each command's own flags (bench.cli.build_parser)
    "train": ("--impl", "--cell", "--dataset", "--seed", "--dtype", "--hidden-size", "--epochs", "--lr",
              "--optimizer", "--batch-size", "--save", "--quiet", "--num-layers", "--bidirectional",
              "--dropout", "--weight-decay", "--clip-norm", "--patience", "--schedule", "--warmup"),
    "evaluate": ("--impl", "--cell", "--dataset", "--seed", "--dtype", "--params"),
    "sweep": ("--preset", "--config", "--impl", "--cell", "--phase", "--batch-size", "--hidden-size", "--seq-len",
              "--input-size", "--threads", "--dtype", "--out", "--resume", "--force", "--max-case-s",
              "--no-accuracy", "--allow-oversubscribe", "--report", "--quiet", "--num-layers",
              "--bidirectional"),
    "profile": ("--impl", "--cell", "--batch-size", "--seq-len", "--input-size", "--hidden-size", "--dtype",
                "--threads", "--out", "--allow-oversubscribe", "--num-layers", "--bidirectional"),
    "report": (), "frobnicate": (),
}


@st.composite
def command_lines(draw):
    """A command and flags drawn mostly from its own (so the checks past argparse are
    reached), sometimes from another command's, with real and bad values."""
    command = draw(st.sampled_from(sorted(COMMAND_FLAGS)))
    own = COMMAND_FLAGS[command] or tuple(FLAGS)
    flags = []
    for _ in range(draw(st.integers(0, 6))):
        foreign = draw(st.integers(0, 9)) == 0  # one flag in ten from another command
        flag = draw(st.sampled_from(sorted(FLAGS) if foreign else own))
        if flag not in flags:
            flags.append(flag)
    argv = [command]
    for flag in flags:
        argv.append(flag)
        if FLAGS[flag] is not None:
            argv.append(draw(FLAGS[flag]))
    if command == "report":
        argv.append(draw(st.sampled_from(["OUT/run", "OUT", "missing-dir"])))
    if command in ("train", "evaluate", "profile") and "--impl" not in argv and draw(st.booleans()):
        argv += ["--impl", "numpy"]
    if command == "evaluate" and "--params" not in argv and draw(st.booleans()):
        argv += ["--params", "PARAMS"]
    return argv


@pytest.fixture
def cheap_work(monkeypatch):
    """The command line is under test, not the measuring: what runs after every check is
    cut short (a sweep's loop over cases, a training run beyond one epoch, profiling)."""
    from bench import profile as profile_module
    from bench.run import sweep as sweep_module
    from bench.train import loop

    monkeypatch.setattr(sweep_module, "_run_cases", lambda *args, **kwargs: None)
    real_train = loop.train
    monkeypatch.setattr(loop, "train", lambda backend, dataset, config, **kw: real_train(
        backend, dataset, dataclasses.replace(config, epochs=1), **kw))
    partial = profile_module._Partial("", "", [], {})
    monkeypatch.setattr(profile_module, "_profile_python", lambda *a, **k: partial)
    monkeypatch.setattr(profile_module, "_profile_torch", lambda *a, **k: partial)


@given(argv=command_lines())
def test_fuzz_command_line(tmp_path_factory, cheap_work, argv):
    from bench.cli import main

    root = tmp_path_factory.mktemp("cli")
    out = root / "out"
    out.mkdir()
    params = root / "params.npz"
    np.savez(params, **impls.init_params(8, 4, 10, seed=0))
    argv = [a.replace("OUT", str(out)).replace("PARAMS", str(params)) for a in argv]
    before = files_under(root) - files_under(out)
    stderr = io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)  # a default --out (runs/...) or profiles/ lands here: allowed
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(stderr):
            try:
                status = main(argv)
            except SystemExit as exit_:  # argparse: usage errors
                status = exit_.code
    finally:
        os.chdir(cwd)
    assert status in (0, 2), (argv, status, stderr.getvalue())
    if status == 2:
        assert "Traceback" not in stderr.getvalue()
        assert "error:" in stderr.getvalue(), stderr.getvalue()
    written = files_under(root) - files_under(out) - before
    allowed = (out, root / "runs", root / "profiles")
    assert all(any(p == a or a in p.parents for a in allowed) for p in written), (argv, written)
    np.testing.assert_array_equal(np.load(params)["W_xh"], impls.init_params(8, 4, 10, seed=0)["W_xh"])


# ------------------------------------------------------------------ every backend's input checks

FUZZED_BACKENDS = [n for n in impls.names() if not impls.entry(n).compile_heavy]


@st.composite
def backend_inputs(draw):
    batch, steps, features = (draw(st.integers(0, 4)) for _ in range(3))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.complex64, np.bool_]))
    ndim = draw(st.sampled_from([3, 3, 3, 2, 4]))
    shape = (batch, steps, features)[:ndim] if ndim <= 3 else (batch, steps, features, 1)
    x = draw(hnp.arrays(dtype, shape, elements=None if np.dtype(dtype).kind in "bic" else
                        st.floats(-10, 10, width=16 if dtype == np.float16 else 32) | st.just(np.nan)))
    if draw(st.booleans()) and x.ndim >= 2:
        x = x[:, ::-1]
    if draw(st.booleans()):
        x.flags.writeable = False
    lengths = None
    if draw(st.booleans()):
        lengths = draw(hnp.arrays(st.sampled_from([np.int64, np.int32, np.float64]), (draw(st.integers(0, 5)),),
                                  elements=st.integers(-1, 5)))
    return x, lengths, draw(st.sampled_from(["predict", "forward", "bind"]))


@pytest.mark.parametrize("name", FUZZED_BACKENDS)
@given(inputs=backend_inputs())
def test_fuzz_backend_input_checks(name, inputs):
    backend = backend_or_skip(name)
    x, lengths, method = inputs
    params = backend.from_numpy(impls.init_params(2, 3, 2, seed=0))
    x_copy = x.copy()
    lengths_copy = None if lengths is None else lengths.copy()
    try:
        native_x = backend.asarray(x)
        native_lengths = None if lengths is None else backend.asarray(lengths)
        result = getattr(backend, method)(params, native_x, native_lengths)
    except ValueError:
        pass
    else:
        logits = result.predict() if method == "bind" else result if method == "predict" else result[0]
        assert np.isfinite(backend.to_numpy(logits)).all()
    np.testing.assert_array_equal(x, x_copy)  # inputs never changed
    if lengths is not None:
        np.testing.assert_array_equal(lengths, lengths_copy)

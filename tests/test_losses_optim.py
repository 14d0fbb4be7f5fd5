"""bench.train.losses and bench.train.optim: against PyTorch's own implementations (float64, 1e-12),
and portable: the same functions on numpy, torch and array-api-strict arrays (the
stand-in for CuPy, which allows nothing beyond the array API standard)."""
import math

import numpy as np
import pytest

from bench.train import losses
from bench.train import optim

SHAPES = {"W_xh": (5, 3), "W_hh": (5, 5), "b_h": (5,), "W_hy": (4, 5), "b_y": (4,)}


def random_dict(rng, scale=1.0):
    return {k: scale * rng.standard_normal(s) for k, s in SHAPES.items()}


# ------------------------------------------------------------- namespaces under test

def to_numpy_ns(a):
    return np.asarray(a)


def to_torch_ns(a):
    torch = pytest.importorskip("torch")
    return torch.tensor(np.asarray(a))


def to_strict_ns(a):
    xps = pytest.importorskip("array_api_strict")
    return xps.asarray(np.asarray(a))


CONVERTERS = {"numpy": to_numpy_ns, "torch": to_torch_ns, "array_api_strict": to_strict_ns}


def back_to_numpy(a):
    if hasattr(a, "detach"):
        return a.detach().numpy()
    return np.asarray(a) if isinstance(a, np.ndarray) else np.from_dlpack(a)


@pytest.fixture(params=list(CONVERTERS))
def convert(request):
    return CONVERTERS[request.param]


def convert_dict(convert, d):
    return {k: convert(v) for k, v in d.items()}


# ------------------------------------------------------------------------ losses

def test_softmax_and_log_softmax_match_torch(rng):
    torch = pytest.importorskip("torch")
    logits = 5 * rng.standard_normal((6, 4))
    t = torch.tensor(logits)
    np.testing.assert_allclose(losses.softmax(logits), torch.softmax(t, -1).numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(losses.log_softmax(logits), torch.log_softmax(t, -1).numpy(),
                               rtol=0, atol=1e-13)


def test_softmax_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4 + 1.0]])
    probs = losses.softmax(logits)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert np.isfinite(losses.log_softmax(logits)).all()
    loss, dlogits = losses.cross_entropy(logits, np.array([2, 0]))
    assert math.isfinite(loss) and np.isfinite(dlogits).all()


def test_cross_entropy_matches_torch_loss_and_gradient(rng):
    torch = pytest.importorskip("torch")
    logits = 3 * rng.standard_normal((7, 5))
    labels = rng.integers(0, 5, size=7)
    loss, dlogits = losses.cross_entropy(logits, labels)
    t = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(t, torch.tensor(labels))  # mean over batch
    expected.backward()
    assert abs(loss - expected.item()) < 1e-13
    np.testing.assert_allclose(dlogits, t.grad.numpy(), rtol=0, atol=1e-15)


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_batch(rng):
    logits, labels = rng.standard_normal((3, 4)), np.array([0, 3, 3])
    _, dlogits = losses.cross_entropy(logits, labels)
    np.testing.assert_allclose(dlogits, (losses.softmax(logits) - np.eye(4)[labels]) / 3, atol=1e-16)


def test_cross_entropy_drops_an_autograd_graph():
    torch = pytest.importorskip("torch")
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True) * 2
    _, dlogits = losses.cross_entropy(logits, torch.tensor([0, 1, 2, 0]))
    assert not dlogits.requires_grad


def test_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert losses.accuracy(logits, np.array([1, 0, 0, 0])) == 0.75


def test_losses_are_portable(convert, rng):
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, size=6)
    loss, dlogits = losses.cross_entropy(convert(logits), convert(labels))
    want_loss, want_dlogits = losses.cross_entropy(logits, labels)
    assert abs(loss - want_loss) < 1e-14
    np.testing.assert_allclose(back_to_numpy(dlogits), want_dlogits, atol=1e-16)
    np.testing.assert_allclose(back_to_numpy(losses.softmax(convert(logits))), losses.softmax(logits))
    assert losses.accuracy(convert(logits), convert(labels)) == losses.accuracy(logits, labels)


# --------------------------------------------------------------------- optimisers

def run_ours(opt, params, grad_seq, lrs):
    for grads, lr in zip(grad_seq, lrs):
        params = opt.step(params, grads, lr=lr)
    return params


def run_torch(make_opt, params, grad_seq, lrs):
    torch = pytest.importorskip("torch")
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = make_opt(list(tensors.values()))
    for grads, lr in zip(grad_seq, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_torch(rng, momentum):
    torch = pytest.importorskip("torch")
    params, grad_seq = random_dict(rng), [random_dict(rng) for _ in range(6)]
    lrs = [0.1, 0.1, 0.05, 0.05, 0.2, 0.01]
    ours = run_ours(optim.SGD(0.1, momentum=momentum), params, grad_seq, lrs)
    theirs = run_torch(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum), params, grad_seq, lrs)
    for k in SHAPES:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=1e-12)


@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-3)])
def test_adam_matches_torch(rng, betas, eps):
    torch = pytest.importorskip("torch")
    params, grad_seq = random_dict(rng), [random_dict(rng, 0.1) for _ in range(8)]
    lrs = [1e-3] * 4 + [3e-2] * 4
    ours = run_ours(optim.Adam(1e-3, betas=betas, eps=eps), params, grad_seq, lrs)
    theirs = run_torch(lambda ps: torch.optim.Adam(ps, lr=1e-3, betas=betas, eps=eps),
                       params, grad_seq, lrs)
    for k in SHAPES:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=1e-12)
    assert not np.allclose(ours["W_hh"], params["W_hh"])  # it moved at all


@pytest.mark.parametrize("make", [lambda: optim.SGD(0.1, momentum=0.9), lambda: optim.Adam(0.01)])
def test_step_is_functional(rng, make):
    params, grads = random_dict(rng), random_dict(rng)
    before = {k: v.copy() for k, v in params.items()}
    new = make().step(params, grads)
    for k in SHAPES:
        np.testing.assert_array_equal(params[k], before[k])
        assert new[k] is not params[k]


@pytest.mark.parametrize("make", [lambda: optim.SGD(0.1), lambda: optim.SGD(0.1, momentum=0.9),
                                  lambda: optim.Adam(0.01)], ids=["sgd", "momentum", "adam"])
def test_optimizers_are_portable(convert, rng, make):
    params, grad_seq = random_dict(rng), [random_dict(rng) for _ in range(3)]
    want = run_ours(make(), params, grad_seq, [None] * 3)
    got = run_ours(make(), convert_dict(convert, params),
                   [convert_dict(convert, g) for g in grad_seq], [None] * 3)
    for k in SHAPES:
        np.testing.assert_allclose(back_to_numpy(got[k]), want[k], rtol=0, atol=1e-14)


def test_make_optimizer():
    assert isinstance(optim.make_optimizer("adam", 1e-3), optim.Adam)
    assert optim.make_optimizer("sgd", 0.1, momentum=0.5).momentum == 0.5
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.make_optimizer("rmsprop", 0.1)


# ------------------------------------------------------------ clipping, L2 decay

@pytest.mark.parametrize("max_norm", [0.5, 1e3])  # clips / leaves alone
def test_clip_matches_torch(rng, max_norm):
    torch = pytest.importorskip("torch")
    grads = random_dict(rng)
    clipped, norm = optim.clip_by_global_norm(grads, max_norm)
    tensors = [torch.tensor(v, requires_grad=True) for v in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g)
    total = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    assert abs(norm - total.item()) < 1e-12
    for t, k in zip(tensors, grads):
        np.testing.assert_allclose(clipped[k], t.grad.numpy(), rtol=0, atol=1e-12)


def test_clip_bounds_the_norm(rng):
    grads = random_dict(rng, 10.0)
    clipped, norm = optim.clip_by_global_norm(grads, 1.0)
    assert norm > 10
    assert optim.global_norm(clipped) <= 1.0 + 1e-9
    # one factor for every array: the direction is kept
    np.testing.assert_allclose(clipped["W_xh"] / grads["W_xh"], clipped["b_y"][0] / grads["b_y"][0])
    assert optim.clip_by_global_norm(grads, None)[0] is grads  # disabled


def test_global_norm_and_clip_are_portable(convert, rng):
    grads = random_dict(rng)
    want_clipped, want_norm = optim.clip_by_global_norm(grads, 0.3)
    got_clipped, got_norm = optim.clip_by_global_norm(convert_dict(convert, grads), 0.3)
    assert abs(got_norm - want_norm) < 1e-12
    assert abs(optim.global_norm(convert_dict(convert, grads)) - want_norm) < 1e-12
    for k in SHAPES:
        np.testing.assert_allclose(back_to_numpy(got_clipped[k]), want_clipped[k], atol=1e-15)


def test_weight_decay_touches_weights_only(rng):
    params, grads = random_dict(rng), random_dict(rng)
    decayed = optim.add_weight_decay(grads, params, 0.1)
    for k in ("W_xh", "W_hh", "W_hy"):
        np.testing.assert_allclose(decayed[k], grads[k] + 0.1 * params[k])
    for k in ("b_h", "b_y"):
        np.testing.assert_array_equal(decayed[k], grads[k])
    assert optim.add_weight_decay(grads, params, 0.0) is grads


def test_weight_decay_is_torch_l2(rng):
    """With decay added to the gradient, our SGD step is torch's SGD(weight_decay=...)."""
    torch = pytest.importorskip("torch")
    params, grads = random_dict(rng), random_dict(rng)
    ours = optim.SGD(0.1).step(params, optim.add_weight_decay(grads, params, 0.01, names=tuple(SHAPES)))
    theirs = run_torch(lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01), params, [grads], [0.1])
    for k in SHAPES:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=1e-14)


def test_weight_decay_is_portable(convert, rng):
    params, grads = random_dict(rng), random_dict(rng)
    got = optim.add_weight_decay(convert_dict(convert, grads), convert_dict(convert, params), 0.1)
    want = optim.add_weight_decay(grads, params, 0.1)
    for k in SHAPES:
        np.testing.assert_allclose(back_to_numpy(got[k]), want[k], atol=1e-15)


# ------------------------------------------------------------------------ schedules

def test_constant_schedule():
    lr_at = optim.Schedule(lr=0.1, kind="constant", epochs=10)
    assert [lr_at(e) for e in (0, 5, 9)] == [0.1, 0.1, 0.1]


def test_cosine_schedule_decays_to_the_floor():
    lr_at = optim.Schedule(lr=1.0, kind="cosine", epochs=10, min_lr=0.1)
    assert lr_at(0) == 1.0
    assert lr_at(5) == pytest.approx(0.55)  # half way: the mean of lr and floor
    assert lr_at(10) == pytest.approx(0.1)
    assert lr_at(50) == pytest.approx(0.1)  # past the horizon: stays at the floor
    values = [lr_at(e) for e in range(10)]
    assert values == sorted(values, reverse=True)


def test_cosine_matches_torch_scheduler():
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8, eta_min=0.01)
    ours = optim.Schedule(lr=0.5, kind="cosine", epochs=8, min_lr=0.01)
    for epoch in range(8):
        assert ours(epoch) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()


def test_step_schedule():
    lr_at = optim.Schedule(lr=1.0, kind="step", epochs=100, step_size=3, gamma=0.5)
    assert [lr_at(e) for e in (0, 2, 3, 5, 6, 9)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("kind", optim.SCHEDULES)
def test_warmup_ramps_linearly_then_hands_over(kind):
    lr_at = optim.Schedule(lr=0.4, kind=kind, epochs=20, warmup=4, step_size=2, gamma=0.5)
    assert [lr_at(e) for e in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    # the schedule proper starts at epoch `warmup` from the full lr
    assert lr_at(4) == pytest.approx(0.4)
    if kind == "constant":
        assert lr_at(19) == 0.4
    else:
        assert lr_at(19) < 0.4


def test_schedule_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.Schedule(lr=0.1, kind="linear")

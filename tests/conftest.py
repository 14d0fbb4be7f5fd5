import numpy as np
import pytest

import impls


def backend_or_skip(name: str, device: str | None = None):
    """The backend, or a skip that states exactly why it cannot run here."""
    try:
        return impls.get(name, device)
    except impls.Unavailable as exc:
        pytest.skip(f"{name} unavailable: {exc}")


@pytest.fixture(params=impls.names())
def any_backend(request):
    return backend_or_skip(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

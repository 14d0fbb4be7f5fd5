"""Registering a throw-away implementation for a test (or an experiment), then removing it."""
from __future__ import annotations

import contextlib
import sys

from impls.registry import REGISTRY, Entry


@contextlib.contextmanager
def temporary_entry(name: str, module, *, requires: str = "nothing"):
    """Register `module` (an object with create(device=None)) as impls.<name>; None makes
    an entry whose import fails, i.e. an unavailable implementation."""
    module_name = f"_temporary_{name}"
    REGISTRY[name] = Entry(name, module_name, f"temporary {name}", requires, {"float32": 1e-5})
    sys.modules[f"impls.{module_name}"] = module  # None makes the import raise ImportError
    try:
        yield
    finally:
        REGISTRY.pop(name, None)
        sys.modules.pop(f"impls.{module_name}", None)

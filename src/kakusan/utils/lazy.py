"""Package names imported on first use (PEP 562), so that reading a config or building the command line does not
load the networks, diffusers or accelerate."""
from __future__ import annotations

import importlib


def lazy_names(package: str, where: dict[str, str]):
    """The module ``__getattr__`` of ``package`` that imports ``name`` from its sub-module ``where[name]``."""
    def __getattr__(name):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{where[name]}", package), name)
    return __getattr__

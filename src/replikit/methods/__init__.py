"""The methods: one module each, ``replikit.methods.<name>``.

A method module defines
    Config      a pydantic model (subclass of :class:`replikit.config.MethodConfig`), a docstring per field;
    CLAIMS      the paper's claims (:class:`replikit.claims.Claim`), declared before anything runs;
    run(cfg)    -> :class:`replikit.results.Outcome`: per-(arm, seed) metrics, histories, extras.
Adding a method touches its module, its notebook, its params.yaml section and the ``methods`` list
(start from ``_template.py`` here and ``notebooks/_template.py``).

This registry is where method names meet their ``Config``: :func:`load_config` resolves a method's
parameters, so the config layer itself never imports a method.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

from replikit import config


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_method(name: str) -> ModuleType:
    if name not in available():
        raise KeyError(f"unknown method {name!r} (known: {', '.join(available())})")
    module = importlib.import_module(f"{__name__}.{name}")
    for attr in ("Config", "CLAIMS", "run"):
        if not hasattr(module, attr):
            raise TypeError(f"method module {module.__name__} lacks {attr}")
    return module


def load_config(
    name: str,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    params_file: str | Path | None = None,
) -> config.MethodConfig:
    """The validated config of method ``name`` for ``profile`` (default: params.yaml's ``profile``)."""
    return config.resolve(name, get_method(name).Config, config.read_params(params_file), profile, overrides)

"""Load and validate a method's parameters from ``params.yaml``.

``params.yaml`` holds ``profile`` (smoke | default | full), a base ``seed``, the list of ``methods``
and one section per method. A section's top-level keys are the method's knobs (the ones
``dvc exp run -S elr.noise_rate=0.6`` sets); its ``profiles:`` sub-section overlays sizes per profile
(epochs, seeds, data sizes). Resolution order, last wins:

    method Config defaults  <  section keys  <  section.profiles[profile]  <  overrides

The result is validated by the method's pydantic ``Config``: an unknown key, a wrong type or an
out-of-range value raises :class:`ConfigError` with one line naming the key and what is allowed,
before anything trains.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pydantic
import yaml

PROFILES = ("smoke", "default", "full")
Profile = Literal["smoke", "default", "full"]


class ConfigError(ValueError):
    """A parameter is unknown, mistyped or out of range (message: one line naming the key)."""


class MethodConfig(pydantic.BaseModel):
    """Base of every method's config: unknown keys are errors, assignments are validated."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    profile: Profile = "default"
    seed: int = pydantic.Field(0, ge=0, description="base seed; every run's seed is derived from it by name")
    n_seeds: int = pydantic.Field(5, ge=1, le=100, description="independent repetitions per arm")
    device: str = pydantic.Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto: CUDA if present")
    workers: int = pydantic.Field(
        0, ge=0, le=64, description="parallel seed processes (1 torch thread each); 0 = one per CPU core"
    )

    @property
    def evidence(self) -> bool:
        """Smoke runs are too small to count as evidence for or against a claim."""
        return self.profile != "smoke"


def find_root(start: str | Path | None = None) -> Path:
    """The project root: the nearest folder at or above ``start`` (default: cwd) holding params.yaml.

    Searching from the working directory, never from this file, keeps ``dvc exp`` workspaces (temp
    copies of the repo) reading their own params.yaml rather than the editable install's checkout.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder
    raise ConfigError(f"no params.yaml in {here} or any folder above it: run from the project checkout")


def read_params(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path else find_root() / "params.yaml"
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return params


def _allowed(model: type[pydantic.BaseModel], key: str) -> str:
    field = model.model_fields.get(key)
    if field is None:
        return ""
    ann = field.annotation
    if get_origin(ann) is Literal:
        return "allowed: " + " | ".join(map(str, get_args(ann)))
    bounds = []
    for meta in field.metadata:
        for name, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, name, None) is not None:
                bounds.append(f"{sym} {getattr(meta, name)}")
    type_name = getattr(ann, "__name__", str(ann))
    return f"allowed: {type_name}" + (" " + ", ".join(bounds) if bounds else "")


def validate(model: type[MethodConfig], values: dict[str, Any], where: str) -> MethodConfig:
    """Validate ``values`` against ``model``; raise ConfigError naming the first bad key."""
    try:
        return model(**values)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields))
            msg = f"{where}.{key}: unknown key (known keys: {known})"
        else:
            got = first.get("input")
            msg = f"{where}.{key} = {got!r}: {first['msg']} ({_allowed(model, key)})"
        raise ConfigError(msg) from None


def resolve(
    method: str,
    model: type[MethodConfig],
    params: dict[str, Any],
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> MethodConfig:
    profile = profile or params.get("profile", "default")
    if profile not in PROFILES:
        raise ConfigError(f"profile = {profile!r}: unknown profile (allowed: {' | '.join(PROFILES)})")
    section = dict(params.get(method) or {})
    per_profile = section.pop("profiles", {}) or {}
    unknown_profiles = set(per_profile) - set(PROFILES)
    if unknown_profiles:
        raise ConfigError(
            f"{method}.profiles.{sorted(unknown_profiles)[0]}: unknown profile (allowed: {' | '.join(PROFILES)})"
        )
    values = {"seed": params.get("seed", 0), **section, **(per_profile.get(profile) or {})}
    values.update(overrides or {})
    values["profile"] = profile
    return validate(model, values, where=method)


def load(
    method: str,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    params_file: str | Path | None = None,
) -> MethodConfig:
    """The validated config of ``method`` for ``profile`` (default: params.yaml's ``profile``)."""
    from replikit.methods import get_method

    return resolve(method, get_method(method).Config, read_params(params_file), profile, overrides)


def config_hash(cfg: pydantic.BaseModel) -> str:
    """Short stable hash of a resolved config (provenance in verdict.json and the report)."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def derive_seed(base: int, *names: object) -> int:
    """A run's seed from (base seed, method, role, repetition...), by hashing the names.

    Adding a method, an arm or a seed never changes another run's draws. Roles used across the
    suite: "data" (data set generation, splits, label noise), "init" (weights), "batches" (order).
    """
    key = "/".join([str(base), *map(str, names)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF

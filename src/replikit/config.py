"""Load and validate a method's parameters from ``params.yaml``.

``params.yaml`` holds ``profile`` (smoke | default | full), the ``seeds`` (a pilot and a confirmation
base, and which one to ``use``), the list of ``methods`` and one section per method. A section's
top-level keys are the method's knobs (the ones ``dvc exp run -S elr.noise_rate=0.6`` sets); its
``profiles:`` sub-section overlays sizes per profile
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
# set by the runner, read in the kernel (replikit.resume, replikit.results): the runner clears the run
# store itself after its final swap. Here, in a module without torch, so the runner can set it before
# it starts the kernel and imports the rest.
DEFER_CLEAR_ENV = "REPLIKIT_DEFER_STORE_CLEAR"
Profile = Literal["smoke", "default", "full"]


class ConfigError(ValueError):
    """A parameter is unknown, mistyped or out of range (message: one line naming the key)."""


SeedRole = Literal["pilot", "confirmation"]


class SeedBase(pydantic.BaseModel):
    """The base every run's seed is derived from, and its role.

    **pilot** seeds are for exploring and settling designs (epochs, coefficients, deltas); the
    **confirmation** seeds judge the verdicts, and no design decision has seen them. :func:`derive_seed`
    keeps the two families disjoint by construction (one bit of the derived seed is the role).
    Written ``pilot:0`` / ``confirmation:1`` on the command line (``--set seed=pilot:0``).
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    role: SeedRole = "confirmation"
    base: int = pydantic.Field(1, ge=0)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"role": "pilot", "base": value}
        if isinstance(value, str):
            role, sep, base = value.partition(":")
            if not sep or not base.strip().isdigit():
                raise ValueError(f"expected 'pilot:N' or 'confirmation:N', got {value!r}")
            return {"role": role.strip(), "base": int(base)}
        return value

    def __str__(self) -> str:
        return f"{self.role}:{self.base}"


class MethodConfig(pydantic.BaseModel):
    """Base of every method's config: unknown keys are errors, assignments are validated."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    profile: Profile = "default"
    seed: SeedBase = pydantic.Field(
        default_factory=SeedBase,
        description="seed base and role (pilot | confirmation); runs derive theirs from it",
    )
    n_seeds: int = pydantic.Field(
        5, ge=1, le=100, description="seeds per arm at the first look (all of them without sequential looks)"
    )
    n_max: int = pydantic.Field(
        0,
        ge=0,
        le=200,
        description="sequential seeds: add seeds while a claim is undecided, up to this (0: no looks)",
    )
    seed_batch: int = pydantic.Field(2, ge=1, le=100, description="seeds added at each sequential look")
    device: str = pydantic.Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto: CUDA if present"
    )
    workers: int = pydantic.Field(
        0, ge=0, le=64, description="parallel seed processes (1 torch thread each); 0 = one per CPU core"
    )

    @pydantic.model_validator(mode="after")
    def _n_max_covers_n_seeds(self) -> MethodConfig:
        if self.n_max and self.n_max < self.n_seeds:
            raise ValueError(
                f"n_max = {self.n_max} is below n_seeds = {self.n_seeds} (0 disables sequential looks)"
            )
        return self

    @property
    def evidence(self) -> bool:
        """Only confirmation seeds at a real size count as evidence for or against a claim: smoke runs are
        too small, and pilot seeds are the ones designs were settled on."""
        return self.profile != "smoke" and self.seed.role == "confirmation"


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
        key = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
        if not key:  # a check across fields
            raise ConfigError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
        if first["type"] == "extra_forbidden":
            known = ", ".join(sorted(set(model.model_fields) - {"profile"}))  # profile: --profile
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
            f"{method}.profiles.{min(unknown_profiles)}: unknown profile (allowed: {' | '.join(PROFILES)})"
        )
    for where, given in (
        (method, section),
        (f"{method}.profiles.{profile}", per_profile.get(profile) or {}),
        ("--set", overrides or {}),
    ):
        if "profile" in given:  # it would be overwritten below: refuse rather than ignore it
            raise ConfigError(
                f"{where}: profile = {given['profile']!r} is not a method key; choose the profile with "
                f"--profile {given['profile']} (or params.yaml's top-level `profile:`)"
            )
    values = {"seed": seed_base(params), **section, **(per_profile.get(profile) or {})}
    values.update(overrides or {})
    if isinstance(values.get("seed"), str) and ":" not in values["seed"]:  # --set seed=pilot: that base
        if values["seed"].strip() not in ("pilot", "confirmation"):
            raise ConfigError(
                f"{method}.seed = {values['seed']!r}: expected pilot, confirmation (params.yaml's base of "
                "that role), pilot:N or confirmation:N (a bare number N is the pilot base N)"
            )
        values["seed"] = seed_base(params, values["seed"].strip())
    values["profile"] = profile
    return validate(model, values, where=method)


def seed_base(params: dict[str, Any], role: str | None = None) -> dict[str, Any]:
    """``params.yaml``'s seed base of ``role`` (default: ``seeds.use``), as SeedBase fields."""
    seeds = params.get("seeds")
    if seeds is None:
        raise ConfigError("params.yaml has no `seeds:` section (pilot, confirmation, use)")
    if not isinstance(seeds, dict) or set(seeds) - {"pilot", "confirmation", "use"}:
        raise ConfigError(f"seeds = {seeds!r}: expected keys pilot, confirmation, use")
    role = role or seeds.get("use", "confirmation")
    if role not in ("pilot", "confirmation"):
        raise ConfigError(f"seeds.use = {role!r}: unknown role (allowed: pilot | confirmation)")
    if not isinstance(seeds.get(role), int) or seeds[role] < 0:
        raise ConfigError(f"seeds.{role} = {seeds.get(role)!r}: a non-negative integer is required")
    return {"role": role, "base": seeds[role]}


def config_hash(cfg: pydantic.BaseModel) -> str:
    """Short stable hash of a resolved config (provenance in verdict.json and the report)."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def derive_seed(base: SeedBase | int, *names: object) -> int:
    """A run's seed from (seed base, method, role, repetition...), by hashing the names.

    Adding a method, an arm or a seed never changes another run's draws. Roles used across the
    suite: "data" (data set generation, splits, label noise), "init" (weights), "batches" (order).
    Pilot and confirmation seeds never overlap: bit 30 of the result is the base's role (1 for
    confirmation). A bare int base is a pilot base.
    """
    base = base if isinstance(base, SeedBase) else SeedBase.model_validate(base)
    key = "/".join([str(base), *map(str, names)]).encode()
    low = int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x3FFFFFFF
    return low | (0x40000000 if base.role == "confirmation" else 0)

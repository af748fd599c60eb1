"""A device-placement guard for CPU-only CI: it fails where a CUDA run would mix devices.

On a CPU run every tensor lives on the CPU, so a tensor that the code forgot to move to the run's device
goes unnoticed until the first GPU run ("Expected all tensors to be on the same device, but found at
least two devices, cuda:0 and cpu"). :class:`PlacementGuard` is a ``TorchFunctionMode`` that gives such
tensors a second, virtual device while the run itself stays on the CPU:

- *unplaced*: a tensor that project code (modules under ``packages``) creates without naming a device
  (``torch.zeros(3)``, ``torch.tensor([...])``, ``torch.as_tensor(array)``, ``torch.from_numpy``), or
  gets from ``.cpu()``. On CUDA these are the tensors that would be on the CPU. Results of operations on
  unplaced tensors alone are unplaced too; ``.to(device)`` with an explicit device places them.
- *placed*: everything else (explicit ``device=``, tensors made by torch itself, model buffers).
- a ``nn.Parameter`` counts as unplaced until it went through ``.to(<a device>)`` (``module.to(device)``
  does that for every parameter): a module built and never moved is caught on its first use.

An operation mixing a placed and an unplaced tensor raises :class:`PlacementError`, naming the operation
and the project line that called it; 0-dim tensors are exempt (CUDA accepts a CPU scalar tensor), and so
are indexing and ``copy_`` (CUDA accepts CPU indices and cross-device copies). ``.item()``, ``.numpy()``
and the like work as usual. What it cannot see: a CPU ``torch.Generator`` handed to a factory that
names the device (CUDA rejects it), and ``.to("cpu")`` written literally.

It caught the three crashes of issue 9 on CPU (before their fix): ``merging.feature_dim`` probing the
encoder with ``torch.zeros(1, *shape)`` (task_arithmetic, ties_merging), and ``multitask.Uncertainty``
keeping its loss factors on the CPU (uncertainty_weighting).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors


class PlacementError(RuntimeError):
    """An operation mixes a tensor on the run's device with one that would stay on the CPU under CUDA."""


_FACTORIES = _device_constructors()
_EXEMPT = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.copy_}
_MOVES = {torch.Tensor.to, torch.Tensor.cuda}
_DATA = torch._C.TensorBase.data  # its ``__set__`` (``param.data = tensor``) moves a parameter in place


def _sets_data(func) -> bool:
    return getattr(func, "__self__", None) is _DATA and func.__name__ == "__set__"


def _tensors(args: Any, kwargs: dict) -> Iterator[torch.Tensor]:
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (b for b in a if isinstance(b, torch.Tensor))


def _explicit_device(func, args, kwargs) -> bool:
    """Does this ``.to``/``.cuda`` call name a target device (as opposed to only a dtype or format)?"""
    if func is torch.Tensor.cuda or kwargs.get("device") is not None:
        return True
    return any(isinstance(a, (str, torch.device, torch.Tensor)) for a in args[1:])


def _project_line(packages: tuple[str, ...]) -> str:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__", "").split(".")[0] in packages:
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


class PlacementGuard(TorchFunctionMode):
    """``with PlacementGuard(): run(cfg)`` on a CPU run; see the module docstring."""

    def __init__(self, packages: tuple[str, ...] = ("replikit",)):
        super().__init__()
        self.packages = packages
        self._unplaced: dict[int, weakref.ref] = {}

    def unplaced(self, t: torch.Tensor) -> bool:
        ref = self._unplaced.get(id(t))
        return ref is not None and ref() is t

    @staticmethod
    def unmoved(t: torch.Tensor) -> bool:
        return isinstance(t, nn.Parameter) and not getattr(t, "_placement_moved", False)

    def _mark(self, out: Any) -> None:
        for t in _tensors((out,) if not isinstance(out, (list, tuple)) else out, {}):
            key = id(t)
            self._unplaced[key] = weakref.ref(t, lambda _, key=key: self._unplaced.pop(key, None))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ours = sys._getframe(1).f_globals.get("__name__", "").split(".")[0] in self.packages
        tensors = list(_tensors(args, kwargs))
        flags = [self.unplaced(t) or self.unmoved(t) for t in tensors]
        if func not in _EXEMPT and func not in _MOVES and not _sets_data(func):
            stray = [t for t, f in zip(tensors, flags) if f and t.dim()]
            if stray and any(not f and t.dim() for t, f in zip(tensors, flags)):
                what = (
                    f"a parameter {tuple(stray[0].shape)} of a module never moved to the run's device"
                    if self.unmoved(stray[0])
                    else f"a tensor {tuple(stray[0].shape)} created without a device"
                )
                raise PlacementError(
                    f"{getattr(func, '__name__', func)} mixes tensors on the run's device with {what} "
                    f"(on CUDA: cuda:0 and cpu) at {_project_line(self.packages)}"
                )
        out = func(*args, **kwargs)

        if _sets_data(func):
            if isinstance(args[0], nn.Parameter) and not self.unplaced(args[1]):
                args[0]._placement_moved = True
            return out
        if func in _MOVES:
            source = args[0]
            if _explicit_device(func, args, kwargs):
                if isinstance(source, nn.Parameter):
                    source._placement_moved = True
                if out is source and self.unplaced(source):
                    out = out[...]  # a fresh alias: the source stays unplaced, the result is placed
                return out
            if self.unplaced(source):
                self._mark(out)
            return out
        if func is torch.Tensor.cpu and ours:
            out = out[...] if out is args[0] else out
            self._mark(out)
        elif func in _FACTORIES and ours and kwargs.get("device") is None:
            if func in (torch.as_tensor, torch.asarray) and isinstance(args[0], torch.Tensor):
                if self.unplaced(args[0]):
                    self._mark(out)
            else:
                self._mark(out)
        elif func is torch.from_numpy and ours:
            self._mark(out)
        elif func in _EXEMPT:
            if tensors and self.unplaced(tensors[0]):
                self._mark(out)
        elif any(self.unplaced(t) for t in tensors) and not any(
            not f and t.dim() for t, f in zip(tensors, flags)
        ):
            self._mark(out)
        return out

"""Leaving the user's model and tensors exactly as they were."""

from __future__ import annotations

import contextlib
import functools
import random
import types
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from captum_borex._checks import warn_at_caller

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def modules_of(*objects: object) -> list[nn.Module]:
    """The ``nn.Module`` objects behind forward functions and attribution methods.

    Looks at modules, bound methods of modules, ``functools.partial`` objects (function and
    arguments), functions and lambdas (their closure and the globals they name), and the
    attributes of other objects such as Captum attribution methods (recursively, for
    wrappers like NoiseTunnel), a few levels deep.
    """
    found: dict[int, nn.Module] = {}
    seen: set[int] = set()

    def visit(obj: object, depth: int = 0) -> None:
        if depth > 6 or id(obj) in seen or isinstance(obj, _LEAVES):
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found.setdefault(id(obj), obj)
            return
        for item in _wrapped_objects(obj):
            visit(item, depth + 1)

    for obj in objects:
        visit(obj)
    return list(found.values())


#: Objects that never hold a model worth looking into.
_LEAVES = (type(None), bool, int, float, complex, str, bytes, Tensor, type, types.ModuleType)


def _wrapped_objects(obj: object) -> list[object]:
    """What a callable or object refers to that may hold a model."""
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, functools.partial):
        return [obj.func, *obj.args, *obj.keywords.values()]
    if isinstance(obj, types.MethodType):
        return [obj.__self__, obj.__func__]
    if isinstance(obj, types.FunctionType):
        cells = []
        for cell in obj.__closure__ or ():
            with contextlib.suppress(ValueError):  # an empty cell
                cells.append(cell.cell_contents)
        names = obj.__code__.co_names
        return cells + [obj.__globals__[n] for n in names if n in obj.__globals__]
    return list(getattr(obj, "__dict__", {}).values())


def warn_if_training(modules: Iterable[nn.Module]) -> None:
    """One ``UserWarning`` if a model has Dropout or BatchNorm layers in training mode."""
    for root in modules:
        if any(m.training and isinstance(m, (_DropoutNd, _BatchNorm)) for m in root.modules()):
            warn_at_caller(
                f"the model {type(root).__name__} is in training mode: Dropout and BatchNorm "
                "make its outputs random or batch-dependent, so explanations and measures are "
                "noisy (a seed still makes them reproducible); call model.eval() first"
            )
            return


def cuda_devices(x: Tensor) -> list[int]:
    """The CUDA device of ``x`` as a list for ``torch.random.fork_rng`` (empty on the CPU)."""
    if not x.is_cuda:
        return []
    return [x.device.index if x.device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def forked_rng(devices: list[int], seed: int | None = None, enabled: bool = True) -> Iterator[None]:
    """Run code without advancing any global random number generator.

    Forks torch's CPU generator and those of the CUDA ``devices``, Python's and NumPy's,
    and seeds torch with ``seed`` (unless None). ``enabled=False`` does nothing.
    """
    if not enabled:
        yield
        return
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextlib.contextmanager
def preserved(modules: Iterable[nn.Module], tensors: Iterable[Tensor] = ()) -> Iterator[None]:
    """Restore modes, hooks, ``requires_grad``, ``.grad`` and buffers on exit, even on error.

    Args:
        modules: Models whose every submodule is restored: train/eval flag, registered hooks
            (hooks added inside are removed), parameters' ``requires_grad`` and ``.grad``,
            buffer values (e.g. BatchNorm running statistics).
        tensors: User tensors whose ``requires_grad`` and ``.grad`` are restored.

    Warns once (see :func:`warn_if_training`) when a model is in training mode.
    """
    modules = list(modules)
    warn_if_training(modules)
    restore: list[Callable[[], None]] = []
    seen: set[int] = set()
    for root in modules:
        for module in root.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            restore.append(_snapshot_module(module))
    for tensor in tensors:
        restore.append(_snapshot_tensor(tensor))
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()


def _snapshot_module(module: nn.Module) -> Callable[[], None]:
    training = module.training
    hooks = {name: set(getattr(module, name, {}).keys()) for name in _HOOK_DICTS}
    params = [
        (p, p.requires_grad, p.grad, None if p.grad is None else p.grad.detach().clone())
        for p in module.parameters(recurse=False)
    ]
    buffers = {name: (b, b.detach().clone()) for name, b in module.named_buffers(recurse=False)}

    def undo() -> None:
        module.training = training
        for name, before in hooks.items():
            registry = getattr(module, name, None)
            if registry is None:
                continue
            for key in [k for k in registry if k not in before]:
                del registry[key]
        with torch.no_grad():
            for param, requires_grad, grad, grad_values in params:
                param.requires_grad_(requires_grad)
                if grad is not None:
                    grad.copy_(grad_values)
                param.grad = grad
            for name, (buffer, values) in buffers.items():
                current = module._buffers.get(name)
                if current is not buffer:
                    module._buffers[name] = buffer
                if not torch.equal(buffer, values):
                    buffer.copy_(values)

    return undo


def _snapshot_tensor(tensor: Tensor) -> Callable[[], None]:
    requires_grad = tensor.requires_grad
    grad = tensor.grad

    def undo() -> None:
        if tensor.is_leaf:
            tensor.requires_grad_(requires_grad)
            tensor.grad = grad

    return undo

"""Leaving the user's model and tensors exactly as they were."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

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

    Looks at modules, bound methods of modules, and the ``forward_func`` / ``layer``
    attributes of Captum attribution objects (recursively, for wrappers like NoiseTunnel).
    """
    found: dict[int, nn.Module] = {}

    def visit(obj: object, depth: int = 0) -> None:
        if obj is None or depth > 4:
            return
        if isinstance(obj, nn.Module):
            found.setdefault(id(obj), obj)
            return
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, nn.Module):
            found.setdefault(id(owner), owner)
        for name in ("forward_func", "layer", "attribution_method"):
            if name in getattr(obj, "__dict__", {}):
                value = obj.__dict__[name]
                for item in value if isinstance(value, (list, tuple)) else (value,):
                    visit(item, depth + 1)

    for obj in objects:
        visit(obj)
    return list(found.values())


@contextlib.contextmanager
def preserved(modules: Iterable[nn.Module], tensors: Iterable[Tensor] = ()) -> Iterator[None]:
    """Restore modes, hooks, ``requires_grad``, ``.grad`` and buffers on exit, even on error.

    Args:
        modules: Models whose every submodule is restored: train/eval flag, registered hooks
            (hooks added inside are removed), parameters' ``requires_grad`` and ``.grad``,
            buffer values (e.g. BatchNorm running statistics).
        tensors: User tensors whose ``requires_grad`` and ``.grad`` are restored.
    """
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

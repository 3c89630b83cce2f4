"""What an explanation depends on, as stable digests: weights, prior, data."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import torch
from torch import Tensor, nn

#: Attribute values of a prior's attribution recorded as its arguments.
_SIMPLE = (type(None), bool, int, float, str)


def _tensor_bytes(tensor: Tensor) -> bytes:
    """The raw bytes of ``tensor`` (any dtype), on the CPU."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def model_digest(module: nn.Module) -> str:
    """A SHA-256 digest of ``module``'s state dict: names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        if not isinstance(value, Tensor):
            continue
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(_tensor_bytes(value))
    return digest.hexdigest()


def sample_digests(inputs: Tensor, labels: Tensor | None) -> Tensor:
    """``(n,)`` int64 digest of each input (and its label): equal only for equal samples."""
    values = []
    for i in range(inputs.shape[0]):
        digest = hashlib.blake2b(digest_size=8)
        digest.update(f"{inputs.dtype}|{tuple(inputs.shape[1:])}|".encode())
        digest.update(_tensor_bytes(inputs[i]))
        if labels is not None:
            digest.update(b"label" + _tensor_bytes(labels[i]))
        values.append(int.from_bytes(digest.digest(), "little", signed=True))
    return torch.tensor(values, dtype=torch.long)


def callable_identity(obj: Any, name: str | None = None) -> str:
    """A stable identity of a function: ``name`` if given; a lambda's or nested function's
    source (two lambdas share a qualified name); else its module and qualified name."""
    if name is not None:
        return name
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None) or type(obj).__module__
    if "<lambda>" in qualname or "<locals>" in qualname:
        try:
            return f"{module}: {inspect.getsource(obj).strip()}"
        except (OSError, TypeError):
            code = getattr(obj, "__code__", None)
            if code is not None:
                body = repr((code.co_code, code.co_consts, code.co_names)).encode()
                return f"{module}.{qualname} (code {hashlib.sha256(body).hexdigest()[:16]})"
    return f"{module}.{qualname}"


def attribution_identity(attribution: Any, module: nn.Module) -> dict[str, Any]:
    """The class of the attribution a prior factory builds, the path of its layer in
    ``module`` and its simple arguments (numbers, strings, flags)."""
    paths = {id(m): name or "<module>" for name, m in module.named_modules()}
    layer = getattr(attribution, "layer", None)
    layers = layer if isinstance(layer, (list, tuple)) else [layer]
    return {
        "class": f"{type(attribution).__module__}.{type(attribution).__qualname__}",
        "layer": [paths.get(id(m), type(m).__qualname__) for m in layers if m is not None],
        "arguments": {
            key: value
            for key, value in sorted(vars(attribution).items())
            if isinstance(value, _SIMPLE) and not key.startswith("_")
        },
    }

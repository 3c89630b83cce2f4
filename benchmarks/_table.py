"""Printing benchmark results as Markdown tables."""

from __future__ import annotations

import platform
from collections.abc import Sequence

import torch


def machine() -> str:
    """One line naming the machine the numbers come from."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (
        f"machine: {platform.machine()} {device}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table; floats get three significant decimals."""

    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(cell(v) for v in row) + " |")

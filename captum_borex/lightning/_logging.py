"""Sending a figure to every logger a Trainer has (call on global rank zero only)."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from captum_borex.lightning._compat import logger_kind


def render(figure: Figure, dpi: int = 100) -> tuple[np.ndarray, bytes]:
    """The figure as an ``(H, W, 3)`` uint8 array and as PNG bytes (drawn once), then closed."""
    import matplotlib.pyplot as plt
    from PIL import Image

    try:
        figure.set_dpi(dpi)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        array = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(figure)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return array, buffer.getvalue()


def shows_images(loggers: list[Any]) -> bool:
    """Whether any logger takes images (TensorBoard, W&B, MLflow)."""
    return any(logger_kind(lg) in ("tensorboard", "wandb", "mlflow") for lg in loggers)


def needs_png(loggers: list[Any], save_png: bool | None) -> bool:
    """Whether PNG files are written: always / never, or (None) when no logger shows images."""
    if save_png is not None:
        return save_png
    return not loggers or any(logger_kind(lg) in ("csv", "other") for lg in loggers)


def log_image(
    loggers: list[Any],
    tag: str,
    array: np.ndarray,
    png: bytes,
    file_name: str,
    step: int,
    png_path: Path | None,
) -> list[str]:
    """Send one image to each logger that shows images, and write it as a PNG file.

    Args:
        loggers: The Trainer's loggers.
        tag: Image name, e.g. "borex/explanations".
        array: ``(H, W, 3)`` uint8 image.
        png: The same image encoded as PNG.
        file_name: Name of the PNG artifact, e.g. "epoch_003.png".
        step: Step to file the image under.
        png_path: Where to write the PNG file; None for no file.

    Returns:
        Where the image went: logger kinds, and the PNG path.
    """
    sent = []
    for logger in loggers:
        kind = logger_kind(logger)
        if kind == "tensorboard":
            logger.experiment.add_image(tag, array, global_step=step, dataformats="HWC")
            logger.experiment.flush()
        elif kind == "wandb":
            logger.log_image(key=tag, images=[array], step=step)
        elif kind == "mlflow":
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / file_name
                path.write_bytes(png)
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=tag)
        else:
            continue
        sent.append(kind)
    if png_path is not None:
        write_atomic(png_path, png)
        sent.append(str(png_path))
    return sent


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)

"""Where a run reports progress: a CSV file always, TensorBoard when it is installed, and
PNG sample grids. Only rank 0 of a distributed run writes any of these."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthmed.atomic import atomic_path


class CsvLog:
    """Append rows of named values to a CSV file; on resume, rows from `keep_below` on go.

    Dropping the rows written after the last checkpoint keeps the log identical to an
    uninterrupted run's instead of holding the replayed steps twice.
    """

    def __init__(self, path: Path, keep_below: int | None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if keep_below is not None and path.exists():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or [])
                kept = [row for row in reader if int(row["step"]) < keep_below]
            with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(kept)
        elif path.exists():
            path.unlink()

    def write(self, row: dict[str, float | int]) -> None:
        """Append one row; the first row fixes the columns."""
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


class TensorBoardLog:
    """Scalars to TensorBoard when the `tensorboard` package is installed; otherwise nothing."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(str(log_dir))

    def write(self, step: int, values: dict[str, float]) -> None:
        """Log every value under its name at `step`."""
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush to disk."""
        if self.writer is not None:
            self.writer.close()


def save_grid(path: Path, rows: list[torch.Tensor], columns: int = 8) -> None:
    """Tile image tensors ([N,C,H,W] in [0, 1]; C = 1 or 3) into one PNG, row by row."""
    tiles = []
    for row in rows:
        row = row.detach().float().cpu().clamp(0, 1)
        if row.shape[1] == 1:
            row = row.expand(-1, 3, -1, -1)
        tiles.extend(row)
    h, w = tiles[0].shape[1:]
    n_rows = -(-len(tiles) // columns)
    canvas = np.zeros((n_rows * (h + 2), columns * (w + 2), 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        pixels = (tile.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        canvas[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = (
            pixels
        )
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")

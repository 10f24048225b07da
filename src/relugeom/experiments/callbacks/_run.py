"""Interim stand-in for ``checkpoints.Run`` (issue 11) with the same interface; removed when it lands."""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ...checkpoints import atomic_write_text, checkpoint_series, load_checkpoint, save_checkpoint
from ...errors import RelugeomError

_CK = re.compile(r"^epoch_(\d+)\.pt$")


class _Lock:
    def __init__(self, run: Run) -> None:
        self.run, self.fd = run, None

    def __enter__(self) -> _Lock:
        self.run.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run.path / ".relugeom.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RelugeomError(f"{self.run.path}: another relugeom process is writing this run") from None
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Run:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    resume_path = property(lambda self: self.path / "resume.pt")
    checkpoint_dir = property(lambda self: self.path / "checkpoints")

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch_{epoch:04d}.pt"

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text())

    def write_config(self, doc: Mapping[str, Any]) -> Path:
        return atomic_write_text(self.config_path, json.dumps(dict(doc), indent=2))

    def checkpoints(self):  # noqa: ANN201
        return checkpoint_series(self.path)

    def checkpoint_epochs(self) -> dict[int, Path]:
        if not self.checkpoint_dir.is_dir():
            return {}
        found = {int(m.group(1)): p for p in self.checkpoint_dir.iterdir() if (m := _CK.match(p.name))}
        return dict(sorted(found.items()))

    def metrics(self) -> pd.DataFrame:
        return pd.read_csv(self.metrics_path) if self.metrics_path.is_file() else pd.DataFrame()

    def committed_epoch(self) -> int | None:
        if not self.resume_path.is_file():
            return None
        return int(load_checkpoint(self.resume_path).extra["epoch"])

    def commit_epoch(self, epoch: int, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                     metrics: pd.DataFrame | list[dict[str, Any]], resume_state: Mapping[str, Any]) -> None:
        table = metrics if isinstance(metrics, pd.DataFrame) else pd.DataFrame(metrics)
        save_checkpoint(self.checkpoint_path(epoch), state_dict, {**meta, "epoch": epoch})
        atomic_write_text(self.metrics_path, table.to_csv(index=False))
        save_checkpoint(self.resume_path, state_dict, {**meta, "epoch": epoch}, extra={**resume_state, "epoch": epoch})

    def remove_stale_temps(self) -> list[Path]:
        return []

    def lock(self) -> _Lock:
        return _Lock(self)

"""The MNIST-1D CNN of Greydanus and Kobak (2020) with their recipe: test accuracy, n_l per Conv1d layer at
initialization and at the end (Gamba et al. 2020, eq. 2), and exact linear regions along a segment between two
test signals (Hanin and Rolnick 2019).

    python examples/mnist1d_cnn.py [OUT_DIR] [EPOCHS]

200 epochs (the authors' 8000 steps of 100 signals) take a few minutes on a laptop CPU and reach about 93-94%
test accuracy (published: 94%); the default of 30 epochs takes about a minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from relugeom import layer_summary, load_checkpoint, projection_stats
from relugeom.experiments.data import load_dataset
from relugeom.experiments.models import model_from_state_dict
from relugeom.experiments.train import TrainConfig, train
from relugeom.regions.segment import regions_on_segment


def main(out: Path, epochs: int) -> None:
    run = out / "run"
    cfg = TrainConfig(arch="mnist1d_cnn", dataset="mnist1d", epochs=epochs, batch_size=100, lr=0.01,
                      optimizer="adam", schedule="none", weight_decay=0.0, init="torch", val_fraction=0.0)  # fmt: skip
    metrics = train(cfg, run) if not (run / "metrics.csv").is_file() else pd.read_csv(run / "metrics.csv")
    print(f"test accuracy after {epochs} epochs: {metrics.test_acc.iloc[-1]:.3f} (Greydanus and Kobak: 0.94)")
    s = layer_summary(projection_stats(run))
    first, last = s.epoch.min(), s.epoch.max()
    table = s[s.epoch.isin([first, last])].pivot(index="layer", columns="epoch", values="n_neg")
    print("n_l per layer (columns: epochs)\n" + table.round(3).to_string())
    ckpt = load_checkpoint(run / "checkpoints" / f"epoch_{last:04d}.pt")
    net = model_from_state_dict("mnist1d_cnn", ckpt.state_dict).double()
    x = load_dataset("mnist1d").test.x.double()
    seg = regions_on_segment(net, x[0], x[1])
    print(f"segment between test signals 0 and 1: {seg.n_activation_regions} activation regions, "
          f"{seg.n_linear_regions} linear regions (exact)")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("relugeom-mnist1d"),
         int(sys.argv[2]) if len(sys.argv) > 2 else 30)  # fmt: skip

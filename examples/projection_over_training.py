"""Train a small ConvNet on the embedded digits data and watch n_l evolve (Gamba et al. 2020, fig. 7 in miniature).

    python examples/projection_over_training.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from relugeom import layer_summary, projection_stats
from relugeom.experiments.train import TrainConfig, train
from relugeom.report import save_figure
from relugeom.report.projection import nl_over_epochs


def main(out: Path) -> None:
    run = out / "run"
    train(TrainConfig(arch="vgg9", dataset="digits", epochs=10, seed=0), run)
    summary = layer_summary(projection_stats(run))
    print(summary.pivot(index="epoch", columns="layer_index", values="n_neg").round(2).to_string())
    save_figure(nl_over_epochs(summary), out / "nl_epochs.png")
    print(f"plot: {out / 'nl_epochs.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("relugeom-example"))

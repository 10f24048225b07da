"""Critical layers vs. biased layers on digits in about a minute (Gamba et al. 2020 sec. 3.3, figs. 2 and 7).

Trains LeNet on scikit-learn's digits for two seeds, resets each conv layer to its earlier epochs
(and a random init), and compares the accuracy drop with n_l at the end of training.

    python examples/critical_layers.py [OUT]
"""

import sys
from pathlib import Path

import pandas as pd

from relugeom import critical_vs_bias, layer_summary, projection_stats, reinit_run, summary_over_runs
from relugeom.experiments.train import TrainConfig, train
from relugeom.report import save_figure
from relugeom.report.reinit import reinit_heatmap

out = Path(sys.argv[1] if len(sys.argv) > 1 else "critical-layers-demo")
runs = []
for seed in range(2):
    run = out / f"seed{seed}"
    if not (run / "metrics.csv").exists():
        train(TrainConfig(arch="lenet", dataset="digits", epochs=4, batch_size=32, lr=0.05, schedule="step:2:0.1",
                          seed=seed), run)
    runs.append(str(run))

summary = layer_summary(projection_stats(runs))
print(summary_over_runs(summary).query("epoch == 4")[["layer", "n_l_mean", "n_l_std"]].to_string(index=False))

drops = pd.concat([reinit_run(r, random=True) for r in runs], ignore_index=True)
save_figure(reinit_heatmap(drops), out / "reinit.png")
cb = critical_vs_bias(drops, summary)
print(cb.table.to_string(index=False))
print(f"Spearman rho(drop, n_l) = {cb.rho:.2f}; heatmap in {out / 'reinit.png'}")

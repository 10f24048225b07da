"""Multi-seed aggregation of n_l (seed 001 figs. 5, 7, 8): mean and standard deviation over runs
against numpy on the raw weights; fig. 7-style panels."""

import numpy as np
import pandas as pd
import pytest

from relugeom import layer_summary, projection_stats, save_checkpoint
from relugeom.experiments.models import build_model
from relugeom.report.projection import nl_over_epochs
from relugeom.stats.projection import summary_over_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    weights = {}
    for seed in range(3):
        for e in range(2):
            model = build_model("lenet", in_channels=1, image_size=8, seed=10 * seed + e)
            save_checkpoint(root / f"seed{seed}" / "checkpoints" / f"epoch_{e:04d}.pt", model.state_dict(),
                            {"epoch": e, "seed": seed, "arch": "lenet"})
            weights[(seed, e)] = {k: v.double().numpy() for k, v in model.state_dict().items()
                                  if k.startswith("features") and k.endswith("weight")}
    return root, weights


def test_mean_and_std_over_seeds_match_numpy(runs):
    root, weights = runs
    summary = layer_summary(projection_stats([str(root / f"seed{s}") for s in range(3)]))
    agg = summary_over_runs(summary)
    layers = sorted(weights[(0, 0)], key=lambda k: int(k.split(".")[1]))
    assert len(agg) == 2 * len(layers) and (agg.n_runs == 3).all()
    for e in range(2):
        for li, key in enumerate(layers):
            per_run = []
            for s in range(3):
                w = weights[(s, e)][key].reshape(weights[(s, e)][key].shape[0], -1)
                cos = w.sum(1) / (np.linalg.norm(w, axis=1) * np.sqrt(w.shape[1]))
                per_run.append(np.mean(cos <= 0))
            row = agg[(agg.epoch == e) & (agg.layer_index == li)].iloc[0]
            assert row.layer == key.rsplit(".", 1)[0]
            assert row.n_l_mean == pytest.approx(np.mean(per_run))
            assert row.n_l_std == pytest.approx(np.std(per_run, ddof=1))


def test_fig7_panels_and_bands(runs):
    root, _ = runs
    summary = layer_summary(projection_stats([str(root / f"seed{s}") for s in range(3)]))
    metrics = pd.DataFrame({"run": ["a", "a", "b", "b"], "epoch": [0, 1, 0, 1], "train_loss": [2, 1, 2.2, 1.1],
                            "val_loss": [2, 1.5, 2.1, 1.4], "train_acc": [0.1, 0.5, 0.1, 0.6],
                            "val_acc": [0.1, 0.4, 0.1, 0.5]})
    fig = nl_over_epochs(summary, metrics, lr_drops=[1], panels=[range(2), range(2, 6)])
    axes = fig.get_axes()
    assert len(axes) == 3  # two n_l panels and the training curves
    assert len(axes[0].get_lines()) >= 2 and len(axes[1].get_lines()) >= 4
    assert len(axes[0].collections) >= 2  # one std band per layer of the first panel
    assert "3 runs" in fig._suptitle.get_text()

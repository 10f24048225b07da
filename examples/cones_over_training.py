"""Cones of a ConvNet over training (Gamba et al. 2019's result figures in miniature) and the exact preimage of one
digit's first-layer output (Carlsson 2019, eq. 9), on the embedded digits data.

    python examples/cones_over_training.py [OUT_DIR]

Trains VGG9 for 10 epochs (about 10 s on 2 cores), then prints the net-wise fractions of the four
nesting states per epoch, draws states_net.png, states_stage.png and continuous.png, and checks the
preimage of the last epoch's first conv layer: the digit lies in P(y), and points sampled from P(y) map to y.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from relugeom import cone_states, load_checkpoint, model_from_state_dict, preimage, state_distribution
from relugeom.checkpoints import checkpoint_series
from relugeom.experiments.data import load_dataset
from relugeom.experiments.train import TrainConfig, train
from relugeom.report import save_figure
from relugeom.report.cones import blockwise_figure, continuous_figure, state_distribution_figure


def main(out: Path) -> None:
    run = out / "run"
    data = load_dataset("digits", augment=False)
    train(TrainConfig(arch="vgg9", dataset="digits", epochs=10, seed=0), run, data=data)
    shape = data.input_shape

    states = cone_states(run, shape)  # one row per filter of layer l+1 and epoch
    net, by_stage = state_distribution(states, "net"), state_distribution(states, "stage")
    print(net.pivot(index="epoch", columns="state", values="fraction").round(3).to_string())
    save_figure(state_distribution_figure(net), out / "states_net.png")
    save_figure(blockwise_figure(by_stage), out / "states_stage.png")
    save_figure(continuous_figure(states[states.epoch == states.epoch.max()]), out / "continuous.png")

    # The exact preimage of the first conv layer's output for one test digit (float64 LPs, scipy HiGHS).
    last = checkpoint_series(run)[-1]
    model = model_from_state_dict("vgg9", load_checkpoint(last.path).state_dict).double().eval()
    conv = model.features[0]
    x = data.test.x[0].double()
    with torch.no_grad():
        y = torch.relu(conv(x[None]))[0].numpy().ravel()
    domain = "orthant" if bool((x >= 0).all()) else "full"
    poly = preimage(conv, y, input_shape=shape, domain=domain)
    pts = poly.sample(5, seed=0)
    with torch.no_grad():
        images = torch.relu(conv(torch.from_numpy(pts).reshape(-1, *shape)))
    err = float(np.abs(images.reshape(len(pts), -1).numpy() - y).max())
    print(f"preimage of one digit's first-layer output ({domain}): contains the digit: "
          f"{poly.contains(x.numpy().ravel())}, dimension {poly.dimension()} of {poly.d}, "
          f"5 samples map to y within {err:.1e}")  # fmt: skip
    print(f"plots: {out / 'states_net.png'}, {out / 'states_stage.png'}, {out / 'continuous.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("relugeom-example"))

"""Record your own PyTorch training loop with relugeom, then analyse and report it.

A plain loop (no framework) trains a small ConvNet of your own on relugeom's digits; the Recorder writes
a run folder as training goes (epoch 0 = the initialization, a checkpoint per epoch with its metrics)
and logs n_l and the per-layer cos histograms to TensorBoard. Then `relugeom stats` and `relugeom
report` read the folder like one written by `relugeom train`.

    python examples/record_your_loop.py [OUT]          # default ./relugeom-example-loop
    tensorboard --logdir OUT/run/tensorboard           # n_l scalars, cos histograms over epochs
    # the Lightning and Hugging Face versions: docs/integrations.md
"""

import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from relugeom.experiments.callbacks import Recorder
from relugeom.experiments.data import load_dataset


class SmallNet(nn.Module):
    """Your own model: anything with Conv/Linear layers."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def main(out: Path) -> None:
    torch.manual_seed(0)
    data = load_dataset("digits")
    x, y = data.train.x.float(), data.train.y.long()
    xv, yv = data.val.x.float(), data.val.y.long()
    net = SmallNet(width=16)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    run = out / "run"
    with Recorder(run, net, seed=0, data="digits", input_shape=(1, 8, 8), num_classes=10,
                  model_factory=SmallNet, model_kwargs={"width": 16}, tensorboard=True,
                  hparams={"lr": 0.05, "momentum": 0.9, "batch_size": 64}) as rec:
        for epoch in range(1, 11):
            perm = torch.randperm(len(x))
            total, correct = 0.0, 0
            for i in range(0, len(x), 64):
                idx = perm[i : i + 64]
                out_ = net(x[idx])
                loss = nn.functional.cross_entropy(out_, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                rec.step()
                total += float(loss.detach()) * len(idx)
                correct += int((out_.argmax(1) == y[idx]).sum())
            with torch.no_grad():
                val_acc = float((net(xv).argmax(1) == yv).float().mean())
            layers = rec.end_epoch(train_loss=total / len(x), train_acc=correct / len(x), val_acc=val_acc)
            nl = ", ".join(f"{n:.2f}" for n in layers["n_neg"])
            print(f"epoch {epoch}: loss {total / len(x):.3f}, val acc {val_acc:.3f}, n_l per layer {nl}", flush=True)
    relugeom = [sys.executable, "-m", "relugeom", "-q"]
    subprocess.run([*relugeom, "stats", str(run), "--out", str(run / "relugeom-stats")], check=True)
    # your own model is rebuilt only when you name it (relugeom never imports code a file names)
    subprocess.run([*relugeom, "reinit", str(run.resolve()), "--arch", "record_your_loop:SmallNet", "--out",
                    str(run.resolve() / "relugeom-reinit")], check=True, cwd=Path(__file__).parent)
    subprocess.run([*relugeom, "report", str(run), "--out", str(out / "report.html")], check=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("relugeom-example-loop"))

"""Complexity measures of Daróczy 2020 on a small MLP and the scikit-learn digits (runs in seconds).

    python examples/measures_digits.py

Trains nothing: compares a zero-bias initialization (where the Fisher-Rao (L+1)^2 identity holds)
with the same network after a few SGD steps, and prints the long table of every measure.
"""

import torch
import torch.nn.functional as F

from relugeom import build_model, fisher_rao_norm, measure_model
from relugeom.experiments.data import load_dataset

data = load_dataset("digits", augment=False)
train = (data.train.x[:300], data.train.y[:300])
test = (data.test.x[:200], data.test.y[:200])
model = build_model("mlp", in_channels=1, image_size=8, hidden=[32, 32], init="kaiming_all", seed=0)

fr = fisher_rao_norm(model, train)
print(f"init: Fisher-Rao^2 = {fr.norm2:.6g} (JVP), {fr.norm2_identity:.6g} ((L+1)^2 identity, L+1 = {fr.depth})")

opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(200):
    opt.zero_grad()
    F.cross_entropy(model(train[0]), train[1]).backward()
    opt.step()

table = measure_model(model, train, test, ["fisher_rao", "kfac", "norms", "expected_sharpness", "hessian_trace",
                                           "tangent"], max_samples=100, n_probes=8, seed=0)  # fmt: skip
print(table.to_string(index=False))

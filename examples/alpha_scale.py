"""Dinh et al.'s alpha-scale (2017, Definition 5): sharpness changes, the Fisher-Rao norm does not.

    python examples/alpha_scale.py [OUT_DIR]

Trains a small MLP on scikit-learn's digits, then applies ``T_alpha`` to its first two layers (first layer times
alpha, second times 1/alpha) for alpha from 0.03 to 30. The function is the same for every alpha (the outputs are
compared), so the Fisher-Rao norm (Liang et al. 2017, Corollary 3.1) stays put, while Keskar et al.'s
epsilon-sharpness, Neyshabur et al.'s expected sharpness and the first layer's Frobenius norm move by orders
of magnitude.
Prints the table and writes alpha_scale.csv and alpha_scale.png to OUT_DIR (default: relugeom-alpha-scale).
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from relugeom import build_model, fisher_rao_norm  # noqa: E402
from relugeom.experiments.data import load_dataset  # noqa: E402
from relugeom.measures import epsilon_sharpness, expected_sharpness  # noqa: E402
from relugeom.measures.rescale import alpha_scale  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else "relugeom-alpha-scale")
out.mkdir(parents=True, exist_ok=True)
data = load_dataset("digits", augment=False)
train = (data.train.x[:300], data.train.y[:300])
model = build_model("mlp", in_channels=1, image_size=8, hidden=[32, 32], seed=0)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(100):
    opt.zero_grad()
    F.cross_entropy(model(train[0]), train[1]).backward()
    opt.step()
model.eval()

rows = []
for alpha in (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0):
    m = alpha_scale(model, alpha, check=train[0])
    fr = fisher_rao_norm(m, train, identity=False)
    sh = epsilon_sharpness(m, train, 1e-3, restarts=2, seed=0)
    ex = expected_sharpness(m, train, sigma=1e-2, n_samples=20, seed=0)
    w1 = next(p for p in m.parameters()).detach()
    rows.append({"alpha": alpha, "fisher_rao_norm2": fr.norm2, "epsilon_sharpness": sh.value,
                 "epsilon_sharpness_se": sh.std_error, "expected_sharpness": ex.value,
                 "expected_sharpness_se": ex.std_error, "first_layer_frobenius": float(w1.norm())})  # fmt: skip
df = pd.DataFrame(rows)
print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
df.to_csv(out / "alpha_scale.csv", index=False)

fig, ax = plt.subplots(figsize=(6, 4))
for col, label in (("fisher_rao_norm2", "Fisher-Rao norm² (Liang et al. 2017)"),
                   ("epsilon_sharpness", "ε-sharpness, ε = 1e-3 (Keskar et al. 2017)"),
                   ("expected_sharpness", "expected sharpness, σ = 1e-2 (Neyshabur et al. 2017)")):  # fmt: skip
    ref = df.loc[df["alpha"] == 1.0, col].item()
    se = df[col + "_se"] / ref if col + "_se" in df else None
    ax.errorbar(df["alpha"], df[col] / ref, yerr=se, marker="o", capsize=3, label=label)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("α (first layer × α, second layer × 1/α)")
ax.set_ylabel("value / value at α = 1 (± standard error)")
ax.set_title("Dinh et al. 2017: the same function, α-scaled")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / "alpha_scale.png", dpi=120)
print(f"wrote {out / 'alpha_scale.csv'} and {out / 'alpha_scale.png'}")

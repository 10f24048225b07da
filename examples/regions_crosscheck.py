"""Cross-check Xiong et al. 2020 Theorem 1 (the published maximum) against exact counts of random weights.

Theorem 1 (ii) says the published value is the count of almost every weight. This script compares
``cnn_max_regions`` with ``layer_regions`` (the exact number of regions of the layer's hyperplane arrangement)
for Gaussian weights on a grid of small shapes: 1D and 2D inputs, 1 and 2 input channels ("depth"), strides
1 and 2, 1 to 4 filters, and prints every shape where they differ. See docs/regions.md for why they differ.

    python examples/regions_crosscheck.py        # about two minutes on one core
"""

import warnings

import pandas as pd
import torch
from torch import nn

from relugeom import cnn_max_regions, layer_regions
from relugeom.errors import BudgetExceeded

warnings.simplefilter("ignore")


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for nd in (1, 2):
        for c in (1, 2):
            sizes = [(n,) for n in (2, 3, 4, 5)] if nd == 1 else [(h, w) for h in (2, 3) for w in (2, 3)]
            for sp in sizes:
                for f in (1, 2, 3):
                    if f > min(sp):
                        continue
                    for s in (1, 2):
                        for d in (1, 2, 3, 4):
                            shape = (c, *sp)
                            published = cnn_max_regions(shape, f, s, d)
                            conv = (nn.Conv1d if nd == 1 else nn.Conv2d)(c, d, f, stride=s)
                            counts = []
                            for _ in range(2):
                                nn.init.normal_(conv.weight)
                                nn.init.normal_(conv.bias)
                                try:
                                    counts.append(layer_regions(conv, shape, budget=2 * 10**5))
                                except BudgetExceeded:
                                    counts.append(None)
                            rows.append({"input": shape, "kernel": f, "stride": s, "filters": d,
                                         "published": published, "exact_1": counts[0], "exact_2": counts[1]})
    df = pd.DataFrame(rows).astype({"exact_1": "Int64", "exact_2": "Int64"})
    done = df.dropna(subset=["exact_1", "exact_2"])
    diff = done[(done.exact_1 != done.published) | (done.exact_2 != done.published)]
    print(f"{len(df)} shapes, {len(done)} counted exactly ({len(df) - len(done)} over the budget), "
          f"{len(diff)} differ:")
    print(diff.to_string(index=False))


if __name__ == "__main__":
    main()

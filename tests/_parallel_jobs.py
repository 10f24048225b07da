"""Module-level analyses for tests/test_parallel.py: worker processes import them by name."""

import pandas as pd


def raise_at_epoch_2(obj, item):
    """A per-checkpoint analysis with a bug that shows only at epoch 2 (not a RelugeomError)."""
    if item.epoch == 2:
        raise ValueError("boom at epoch 2")
    return pd.DataFrame({"n_tensors": [len(obj.state_dict())]})

#!/usr/bin/env bash
# GPU check: train, re-initialization, measures and exact regions on a segment, on the GPU and on the CPU, with
# samples/s and the GPU/CPU ratio, and whether the GPU kept the CPU's results (float64 where the geometry is exact).
#
#   bash benchmarks/gpu_check.sh            # about 1-3 minutes on one GPU plus its host's cores
#   bash benchmarks/gpu_check.sh --quick    # lenet instead of VGG9, tiny sizes: what the tests run
#
# Without a CUDA device it says "no CUDA device: CPU column only" and fills the CPU column.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PY" - "$@" <<'EOF'
import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from relugeom.experiments.data import load_dataset
from relugeom.experiments.models import build_model
from relugeom.experiments.reinit import reinit_run
from relugeom.experiments.train import TrainConfig, train
from relugeom.measures.table import measure_model
from relugeom.regions.segment import regions_on_segment

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
args = ap.parse_args()
warnings.simplefilter("ignore")
cuda = torch.cuda.is_available()
devices = ["cpu"] + (["cuda"] if cuda else [])
if not cuda:
    print("no CUDA device: CPU column only")
else:
    print(f"GPU: {torch.cuda.get_device_name(0)}; CPU threads: {torch.get_num_threads()}")
epochs, n_train, n_meas, n_seg = (1, 200, 50, 1) if args.quick else (3, 1400, 1000, 4)
arch = "lenet" if args.quick else "vgg9"
data = load_dataset("digits", augment=False)


def timed(dev, f):
    if dev == "cuda":
        f()  # warm-up (CUDA context, kernels)
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = f()
    if dev == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


rows = {}
with tempfile.TemporaryDirectory() as tmp:
    for dev in devices:
        run = Path(tmp) / f"run-{dev}"
        cfg = TrainConfig(arch=arch, dataset="digits", epochs=epochs, batch_size=128, seed=0, n_train=n_train)

        def do_train():
            import shutil

            shutil.rmtree(run, ignore_errors=True)
            return train(cfg, run, device=dev)

        t, metrics = timed(dev, do_train)
        rows.setdefault("train", {})[dev] = (n_train * epochs / t, float(metrics["train_loss"].iloc[-1]))
        n_test = len(data.test)
        t, drops = timed(dev, lambda: reinit_run(run, device=dev))
        rows.setdefault("reinit", {})[dev] = (n_test * len(drops) / t, drops)
        model = build_model(arch, num_classes=10, in_channels=1, image_size=8, seed=0)
        xy = (data.train.x[:n_meas], data.train.y[:n_meas])
        t, m = timed(dev, lambda: measure_model(model, xy, None, ["fisher_rao", "norms", "hessian_trace"],
                                                max_samples=n_meas, n_probes=4, device=dev))
        rows.setdefault("measures", {})[dev] = (n_meas / t, m.set_index("measure")["value"])
        net = build_model("mlp", in_channels=1, image_size=8, hidden=[32, 32], seed=0).to(dev)
        X = data.test.x.to(dev)

        def segments():
            return [regions_on_segment(net, X[2 * i], X[2 * i + 1]).n_activation_regions for i in range(n_seg)]

        t, counts = timed(dev, segments)
        rows.setdefault("regions_on_segment", {})[dev] = (n_seg / t, counts)

table = []
for name, by_dev in rows.items():
    cpu = by_dev["cpu"]
    gpu = by_dev.get("cuda")
    if gpu is None:
        same = "-"
    elif name == "train":
        same = f"loss {cpu[1]:.4f} vs {gpu[1]:.4f}"
    elif name == "reinit":
        same = "max |drop diff| %.1e" % (cpu[1]["drop"] - gpu[1]["drop"]).abs().max()
    elif name == "measures":
        rel = ((cpu[1] - gpu[1]).abs() / cpu[1].abs().clip(lower=1e-300)).max()
        same = f"max rel. diff {rel:.1e} (float64)"
    else:  # the exact cell propagation runs in float64 numpy on the host, whatever the model's device
        same = ("equal counts" if cpu[1] == gpu[1] else f"counts differ: {cpu[1]} vs {gpu[1]}") + " (host numpy)"
    unit = "segments/s" if name == "regions_on_segment" else "samples/s"
    table.append({"analysis": name, "unit": unit, "cpu": cpu[0], "gpu": gpu[0] if gpu else float("nan"),
                  "gpu/cpu": gpu[0] / cpu[0] if gpu else float("nan"), "results": same})
print(pd.DataFrame(table).to_string(index=False, float_format="{:.1f}".format))
sys.exit(0)
EOF

"""`relugeom report` without a browser: what the page holds against the files and weights it comes from.

Independent truths: each embedded CSV download decodes to the table the verb wrote; n_l over runs is
the mean and sample deviation of n_l counted by the sign identity on each seed's checkpoints; the
Markdown's files are the same tables; nothing in the page points outside it.
"""

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from _cli import run
from _tinynet import digits, n_l_brute
from relugeom import load_checkpoint
from relugeom.checkpoints import checkpoint_series
from relugeom.experiments.callbacks import Recorder
from relugeom.experiments.models import build_model


def downloads(html):
    """{file name: DataFrame} of every download link of the page."""
    out = {}
    for name, data in re.findall(r'download="([^"]+)" href="data:text/csv;charset=utf-8;base64,([^"]+)"', html):
        out[name] = pd.read_csv(io.BytesIO(base64.b64decode(data)))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    x, y = digits(192)
    for seed in (0, 1):
        net = build_model("lenet", num_classes=10, in_channels=1, image_size=8, seed=seed)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        with Recorder(root / f"s{seed}" / "run", net, seed=seed, data="digits", arch="lenet",
                      input_shape=(1, 8, 8)) as rec:  # fmt: skip
            for _ in range(2):
                loss = nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                rec.end_epoch(train_loss=float(loss.detach()))
    return root


def test_report_embeds_the_analyses_it_finds(runs, tmp_path, capsys):
    r0 = runs / "s0" / "run"
    code, _, err = run(["reinit", str(r0), "--out", str(r0 / "relugeom-reinit")], capsys)
    assert code == 0, err
    page = tmp_path / "one.html"
    code, out, err = run(["report", str(r0), "--out", str(page)], capsys)
    assert code == 0, err
    html = page.read_text()
    got = downloads(html)
    written = pd.read_csv(r0 / "relugeom-reinit" / "reinit.csv")
    pd.testing.assert_frame_equal(got["reinit.csv"].drop(columns="run"), written.drop(columns="run"),
                                  check_dtype=False)  # fmt: skip
    metrics = pd.read_csv(r0 / "metrics.csv")
    pd.testing.assert_frame_equal(got["metrics.csv"].drop(columns="run"), metrics, check_dtype=False)
    assert "Not computed for this run" in html  # cones, regions, measures: told how to compute them
    assert "relugeom cones RUN" in html
    # nothing points outside the page: every src/href is a data URI or an in-page anchor
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attr.startswith(("data:", "#")), attr
    assert "torch" in html and "generated" in html


def test_report_aggregates_seeds(runs, tmp_path, capsys):
    dirs = [runs / "s0" / "run", runs / "s1" / "run"]
    page = tmp_path / "two.html"
    code, _, err = run(["report", *map(str, dirs), "--out", str(page)], capsys)
    assert code == 0, err
    got = downloads(page.read_text())
    over = got["n_l_over_runs.csv"]
    assert set(over.n_runs) == {2}
    # the runs share a folder name: labelled by their relative paths, not merged
    assert set(got["layers.csv"].run) == {"s0/run", "s1/run"}
    for (epoch, layer), row in over.set_index(["epoch", "layer"]).iterrows():
        per_seed = []
        for d in dirs:
            entry = next(e for e in checkpoint_series(d) if e.epoch == epoch)
            per_seed.append(n_l_brute(load_checkpoint(entry.path).state_dict[f"{layer}.weight"]))
        assert row["mean"] == pytest.approx(np.mean(per_seed))
        assert row["std"] == pytest.approx(np.std(per_seed, ddof=1))


def test_report_markdown(runs, tmp_path, capsys):
    r0 = runs / "s0" / "run"
    out = tmp_path / "nb" / "run.md"
    code, _, err = run(["report", str(r0), "--format", "md", "--out", str(out)], capsys)
    assert code == 0, err
    text = out.read_text()
    links = re.findall(r"\]\((run_files/[^)]+)\)", text)
    assert links and all((out.parent / p).is_file() for p in links)
    assert any(p.endswith(".png") for p in links)
    layers = pd.read_csv(out.parent / "run_files" / "layers.csv")
    last = load_checkpoint(checkpoint_series(r0)[-1].path).state_dict
    for layer, nl in layers[layers.epoch == 2].set_index("layer")["n_neg"].items():
        assert nl == pytest.approx(n_l_brute(last[f"{layer}.weight"]))
    assert "# relugeom report: run" in text and "## Provenance" in text

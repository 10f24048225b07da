"""Presets that rerun every experiment of Gamba et al. 2020 end to end: train each variant for several seeds,
then the projection statistics (mean and one standard deviation over seeds), the histograms, and the
re-initialization heatmaps where the paper has them.

``scale="full"`` uses the paper's recipe (sec. 3.1, A.1): SGD, momentum 0.9, weight decay 5e-4, base
learning rate 0.01, step schedule (x0.1 every 25 epochs) or the exponential one (x10^(-1/25) per
epoch; x0.95 per epoch for figs. 6 and 20), Kaiming normal init with zero biases, no batch norm,
shifts of 4 pixels and flips. Where the paper gives no number, the choices are listed in
``docs/experiments.md`` (epochs, batch sizes). ``scale="tiny"`` runs the same pipeline on the 8x8
digits that ship with scikit-learn (LeNet in place of VGG19, AlexNet on 64x64 upscaled digits),
for CI and for checking an installation in a minute.

A preset's run folders are reused: a finished run is skipped and an interrupted one resumed, so
rerunning the same command after a crash loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..checkpoints import Run
from ..errors import DataError, RelugeomError
from ..report import FigureOutput
from .train import TrainConfig, read_run_config

VGG19_FIG7_PANELS = [list(range(7)), list(range(7, 16))]


@dataclass(frozen=True)
class Variant:
    """One training configuration of an experiment (trained once per seed)."""

    name: str
    config: TrainConfig


@dataclass(frozen=True)
class Experiment:
    """A figure (or figures) of Gamba et al. 2020 and the runs behind it."""

    name: str
    figures: str
    description: str
    variants: Callable[[str, str | None], list[Variant]] = field(repr=False)
    reinit: bool = False
    first_layer_only: bool = False
    needs_data: bool = True  # False: an embedded data set (no --data-dir at full scale)
    region_epochs: int = 0  # > 0: exact region counts on lines through data points every this many epochs (seed 0)


def _imagenet_dir(data_dir: str | None) -> str | None:
    if data_dir is None:
        return None
    d = Path(data_dir)
    return str(d / "imagenet") if not (d / "train").is_dir() and (d / "imagenet").is_dir() else str(d)


def _cfg(scale: str, data_dir: str | None, *, arch: str, dataset: str, epochs: int, batch_size: int = 128,
         **kw: Any) -> TrainConfig:  # fmt: skip
    """The full-scale config, or its tiny stand-in on digits."""
    if scale == "full":
        ddir = _imagenet_dir(data_dir) if dataset == "folder" else data_dir
        return TrainConfig(arch=arch, dataset=dataset, data_dir=ddir, epochs=epochs, batch_size=batch_size, **kw)
    tiny_arch = {"vgg19": "lenet", "alexnet": "alexnet"}.get(arch, arch)
    extra: dict[str, Any] = {"image_size": 64, "model_kwargs": {"hidden": 64}} if arch == "alexnet" else {}
    schedule = kw.pop("schedule", "step")
    kind = schedule.split(":")[0]
    tiny_schedule = "step:2:0.1" if kind == "step" else ("exp:0.7" if kind == "exp" else schedule)
    kw.setdefault("lr", 0.05)
    return TrainConfig(arch=tiny_arch, dataset="digits", data_dir=None, epochs=3, batch_size=32, n_train=384,
                       schedule=tiny_schedule, **{**kw, **extra})  # fmt: skip


def _single(name: str, **kw: Any) -> Callable[[str, str | None], list[Variant]]:
    return lambda scale, data_dir: [Variant(name, _cfg(scale, data_dir, **kw))]


def _first_layers(scale: str, data_dir: str | None) -> list[Variant]:
    common = {"schedule": "exp", "epochs": 100}
    out = [
        Variant("vgg19-cifar10-pm1", _cfg(scale, data_dir, arch="vgg19", dataset="cifar10", normalize="pm1", **common)),
        Variant("vgg19-imagenet-pm1", _cfg(scale, data_dir, arch="vgg19", dataset="folder", normalize="pm1",
                                           batch_size=256, **{**common, "epochs": 90})),
        Variant("vgg19-cifar10-unit", _cfg(scale, data_dir, arch="vgg19", dataset="cifar10", normalize="unit",
                                           **common)),
        Variant("lenet-mnist-pm1", _cfg(scale, data_dir, arch="lenet", dataset="mnist", normalize="pm1", **common)),
    ]  # fmt: skip
    return out  # at tiny scale all four run on digits and differ by their pixel range only


def _schedules(scale: str, data_dir: str | None) -> list[Variant]:
    return [
        Variant(f"vgg19-{ds}-{sched}", _cfg(scale, data_dir, arch="vgg19", dataset=d, schedule=sched,
                                            epochs=100 if d == "cifar10" else 90,
                                            batch_size=128 if d == "cifar10" else 256))
        for ds, d in (("cifar10", "cifar10"), ("imagenet", "folder")) for sched in ("step", "exp")
    ]  # fmt: skip


def _mnist1d(scale: str, data_dir: str | None) -> list[Variant]:
    """The MNIST-1D CNN with Greydanus and Kobak's recipe (2020; their train.py): Adam, learning rate 0.01, batch
    100, no weight decay, no schedule, PyTorch's default init, 8000 steps = 200 epochs of the 4000 training signals
    (no validation split). Tiny: 3 epochs on 512 signals."""
    cfg = TrainConfig(arch="mnist1d_cnn", dataset="mnist1d", epochs=200, batch_size=100, lr=0.01, optimizer="adam",
                      schedule="none", weight_decay=0.0, init="torch", val_fraction=0.0)  # fmt: skip
    if scale != "full":
        cfg = replace(cfg, epochs=3, n_train=512)
    return [Variant("mnist1d-cnn", cfg)]


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("alexnet-imagenet", "4, 5, 18", "AlexNet on ImageNet: cos histograms, n_l over epochs, re-init",
               _single("alexnet-imagenet", arch="alexnet", dataset="folder", epochs=90, batch_size=256),
               reinit=True),
    Experiment("vgg19-cifar10", "7, 2, 23", "VGG19 on CIFAR-10: n_l over epochs (fig. 7 panels) and re-init",
               _single("vgg19-cifar10", arch="vgg19", dataset="cifar10", epochs=100), reinit=True),
    Experiment("vgg19-imagenet", "8, 19", "VGG19 on ImageNet: n_l over epochs and re-init",
               _single("vgg19-imagenet", arch="vgg19", dataset="folder", epochs=90, batch_size=256), reinit=True),
    Experiment("noisy-labels", "6", "VGG19 on CIFAR-10 with all labels noisy, exp(0.95), no regularisation",
               _single("vgg19-cifar10-noisy", arch="vgg19", dataset="cifar10", epochs=100, label_noise=1.0,
                       schedule="exp:0.95", augment=False, weight_decay=0.0)),
    Experiment("failing-init", "15", "VGG19 on ImageNet from N(0, 0.01^2): fails to learn, n_l stays at 0.5",
               _single("vgg19-imagenet-normal001", arch="vgg19", dataset="folder", epochs=10, batch_size=256,
                       init="normal001")),
    Experiment("vgg19-cifar100", "16, 17", "VGG19 on CIFAR-100, exponential schedule: n_l and re-init",
               _single("vgg19-cifar100", arch="vgg19", dataset="cifar100", epochs=100, schedule="exp"),
               reinit=True),
    Experiment("pixel-shuffle", "20", "VGG19 on CIFAR-10 with the pixels of every training image shuffled",
               _single("vgg19-cifar10-shuffled", arch="vgg19", dataset="cifar10", epochs=100, pixel_shuffle=True,
                       schedule="exp:0.95", augment=False)),
    Experiment("first-layers", "21", "First layer's n_l: VGG19 on CIFAR-10, ImageNet, CIFAR-10/+, LeNet on MNIST",
               _first_layers, first_layer_only=True),
    Experiment("schedules", "22, 24", "Step vs. exponential schedule, VGG19 on CIFAR-10 and ImageNet",
               _schedules, reinit=True),
    Experiment("mnist1d", "-", "MNIST-1D CNN (Greydanus and Kobak 2020): n_l per layer over training, regions "
               "on lines", _mnist1d, needs_data=False, region_epochs=20),
]}  # fmt: skip


def experiment_plan(name: str, *, data_dir: str | None = None, seeds: int = 3, scale: str = "full") -> list[
        tuple[Variant, int]]:  # fmt: skip
    """The (variant, seed) runs of an experiment."""
    if name not in EXPERIMENTS:
        raise RelugeomError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    if scale not in ("full", "tiny"):
        raise RelugeomError(f"scale must be full or tiny, got {scale!r}")
    if seeds < 1:
        raise RelugeomError(f"--seeds must be at least 1, got {seeds}")
    if scale == "full" and data_dir is None and EXPERIMENTS[name].needs_data:
        raise DataError(f"{name} at full scale needs --data-dir (relugeom downloads nothing); see docs/experiments.md")
    variants = EXPERIMENTS[name].variants(scale, data_dir)
    return [(v, s) for v in variants for s in range(seeds)]


def _train_or_resume(config: TrainConfig, run_dir: Path, device: str) -> str:
    from .train import resume, train

    run = Run(run_dir)
    if run.is_run():
        stored = read_run_config(run_dir)
        if replace(stored, epochs=config.epochs) != config:
            raise RelugeomError(f"{run_dir}: holds a run with another configuration; remove it or choose another --out")
        done = run.committed_epoch()
        if done is not None and done >= config.epochs:
            return "done"
        resume(run_dir, epochs=config.epochs, device=device)
        return "resumed"
    train(config, run_dir, device=device)  # refuses a folder that holds run files without a config
    return "trained"


def _train_job(config: TrainConfig, run_dir: Path, device: str) -> str:
    """:func:`_train_or_resume` as a job: its RelugeomError comes back as ``"error: MESSAGE"`` (no pickled
    exception), with the run folder named."""
    from .._progress import set_quiet

    set_quiet(True)
    try:
        return _train_or_resume(config, run_dir, device)
    except RelugeomError as e:
        return f"error: {e}" if str(run_dir) in str(e) else f"error: {run_dir}: {e}"


def _region_counts(vname: str, vdir: Path, run: str, cfg: TrainConfig, every: int,
                   figures: FigureOutput, title: str) -> dict[str, Path]:  # fmt: skip
    """Exact activation-region counts on 4 lines through test points (Hanin and Rolnick 2019) at every
    ``every``-th checkpoint of one run; ``regions.csv``, ``regions_summary.csv``, ``regions_epochs.png``."""
    from ..checkpoints import checkpoint_series
    from ..regions.training import regions_over_training, training_summary
    from ..report.regions import training_figure
    from ..tables import write_table
    from .train import prepare_data

    entries = checkpoint_series(run)
    last = max(e.epoch or 0 for e in entries)
    picked = [str(e.path) for e in entries if e.epoch is not None and (e.epoch % every == 0 or e.epoch == last)]
    data = prepare_data(cfg)
    points = data.test.x if data.test is not None and len(data.test) >= 3 else data.val.x
    df = regions_over_training(picked, points, n_lines=4, n_planes=0, seed=0)
    summary = training_summary(df)
    return {
        f"{vname}/regions": write_table(df, vdir / "regions", "csv"),
        f"{vname}/regions_summary": write_table(summary, vdir / "regions_summary", "csv"),
        f"{vname}/regions_epochs": figures.save(training_figure(summary, title=title), vdir, "regions_epochs"),
    }


def reproduce(
    name: str,
    out: str | Path,
    *,
    data_dir: str | None = None,
    seeds: int = 3,
    scale: str = "full",
    device: str = "cpu",
    log: Callable[[str], None] = lambda _: None,
    figures: FigureOutput | None = None,
    executor: Any = None,
) -> dict[str, Path]:
    """Run an experiment of Gamba et al. 2020 into ``out/NAME`` and draw its figures; returns the files written.

    ``executor`` (a :func:`~relugeom.parallel.process_pool`, a :func:`~relugeom.parallel.submitit_executor`, any
    ``concurrent.futures``-style executor) trains the seeds as parallel jobs, then runs the statistics and the
    re-initializations on it too, with their parts under ``VARIANT/parts/``.

    Per variant: ``seedS/`` run folders, ``layers.csv`` (n_l per run, layer, epoch),
    ``layers_over_seeds.csv`` (mean and std over seeds), ``nl_epochs.png``, ``histograms.png``
    (epoch 0 vs. the last epoch of seed 0) and, for re-init experiments, ``reinit.csv``,
    ``reinit.png``, ``critical_vs_bias.csv`` / ``.png``.
    """
    from ..report.projection import cos_histograms, nl_over_epochs
    from ..report.reinit import critical_vs_bias_plot, reinit_heatmap
    from ..sources import run_labels
    from ..stats.projection import layer_summary, projection_stats, summary_over_runs
    from ..tables import write_table
    from .reinit import critical_vs_bias, reinit_run
    from .train import lr_drops, prepare_data

    figures = figures or FigureOutput()
    exp = EXPERIMENTS.get(name)
    plan = experiment_plan(name, data_dir=data_dir, seeds=seeds, scale=scale)
    root = Path(out) / name
    written: dict[str, Path] = {}
    variants = list(dict.fromkeys(v.name for v, _ in plan))
    checked: set[str] = set()
    jobs = []
    for variant, seed in plan:
        cfg = replace(variant.config, seed=seed)
        if variant.name not in checked:  # fail early, before any training, when data is missing
            prepare_data(cfg)  # image folders are only scanned here; in-memory sets are read once more
            checked.add(variant.name)
        run_dir = root / variant.name / f"seed{seed}"
        if executor is None:
            log(f"{variant.name} seed {seed}: {_train_or_resume(cfg, run_dir, device)} ({run_dir})")
        else:
            jobs.append((variant.name, seed, run_dir, executor.submit(_train_job, cfg, run_dir, device)))
    for vname, seed, run_dir, job in jobs:
        try:
            status = job.result()
        except Exception as e:  # noqa: BLE001 -- a job lost by the cluster: name the run, no traceback
            raise RelugeomError(f"{run_dir}: the training job failed ({type(e).__name__}: {str(e)[:300]})") from None
        if status.startswith("error: "):
            raise RelugeomError(status[len("error: "):])
        log(f"{vname} seed {seed}: {status} ({run_dir})")
    for vname in variants:
        vdir = root / vname
        runs = sorted(str(p) for p in vdir.glob("seed*") if p.is_dir())
        cfg = read_run_config(runs[0])
        schedule = {"executor": executor, "parts": None if executor is None else vdir / "parts" / "stats"}
        df = projection_stats(runs if len(runs) > 1 else runs[0], **schedule)
        summary = layer_summary(df)
        if exp is not None and exp.first_layer_only:
            summary = summary[summary.layer_index == 0]
        written[f"{vname}/layers"] = write_table(summary, vdir / "layers", "csv")
        written[f"{vname}/layers_over_seeds"] = write_table(summary_over_runs(summary), vdir / "layers_over_seeds",
                                                            "csv")  # fmt: skip
        metrics = pd.concat([Run(r).metrics().assign(run=label) for r, label in zip(runs, run_labels(runs))])
        n_layers = summary.layer_index.nunique()
        panels = VGG19_FIG7_PANELS if n_layers == 16 else None
        label = (name if vname == name else f"{name}: {vname}") + f" ({scale} scale)"
        fig = nl_over_epochs(summary, metrics, lr_drops=lr_drops(cfg.schedule, cfg.epochs), panels=panels,
                             title=label)  # fmt: skip
        written[f"{vname}/nl_epochs"] = figures.save(fig, vdir, "nl_epochs")
        first = df[df["run"] == df["run"].iloc[0]] if "run" in df else df
        init, last = first[first.epoch == first.epoch.min()], first[first.epoch == first.epoch.max()]
        fig = cos_histograms(last, init, labels=(f"epoch {int(last.epoch.max())}", "initialization"),
                             title=f"{label}, {first['run'].iloc[0] if 'run' in first else runs[0]}")  # fmt: skip
        written[f"{vname}/histograms"] = figures.save(fig, vdir, "histograms")
        if exp is not None and exp.region_epochs:
            written.update(_region_counts(vname, vdir, runs[0], cfg, exp.region_epochs if scale == "full" else 1,
                                          figures, f"{label}, {run_labels(runs)[0]}"))  # fmt: skip
        if exp is not None and exp.reinit:
            schedule = {"executor": executor, "parts": None if executor is None else vdir / "parts" / "reinit"}
            drops = pd.concat([reinit_run(r, random=True, device=device, **schedule) for r in runs], ignore_index=True)
            written[f"{vname}/reinit"] = write_table(drops, vdir / "reinit", "csv")
            written[f"{vname}/reinit_png"] = figures.save(reinit_heatmap(drops, title=label), vdir, "reinit")
            cb = critical_vs_bias(drops, layer_summary(df))
            written[f"{vname}/critical_vs_bias"] = write_table(cb.table, vdir / "critical_vs_bias", "csv")
            written[f"{vname}/critical_vs_bias_png"] = figures.save(
                critical_vs_bias_plot(cb.table, cb.rho, cb.rho_bias, title=label), vdir, "critical_vs_bias")
            log(f"{vname}: Spearman rho(drop, n_l) = {cb.rho:.3f}, rho(drop, |2 n_l - 1|) = {cb.rho_bias:.3f}")
    return written

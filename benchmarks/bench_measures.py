"""Benchmark of relugeom.measures against nngeometry and BackPACK (run: python benchmarks/bench_measures.py [--quick]).

First, the cost of every measure per checkpoint, in forward+backward passes over the measured data: its time
over the time of one forward+backward pass over the same data, in the same process (a VGG9 on digits, the
`relugeom measures` defaults: 1000 samples, 256 for the costly measures, 20 probes), beside the estimate that
`relugeom measures` prints before it starts. The default set must cost at most 20 passes (``--costs-only``
prints only this table; it needs no peer).

Ratios are relugeom's time over the peer's, measured in this process (best of ``--repeat`` runs);
<= 1.0 means relugeom is at least as fast. Agreement is the relative Frobenius error of the
Kronecker blocks ``G (x) A`` (independent of how a library splits scalars between the factors)
or the relative error of the Fisher-Rao norm. Conventions matched (all in float64):

- K-FAC, true (model) Fisher with the exact expectation over the classes: relugeom
  ``kfac(fisher="model")``, nngeometry ``FIM(..., PMatKFAC, variant="classif_logits")``,
  BackPACK ``KFLR`` (the loss' mean reduction gives the same 1/N). BackPACK's conv factors are a
  different approximation (its G is the GGN of the bias, summing positions before the outer
  product; its A is relugeom's times T), so BackPACK is compared on the Linear blocks only.
- Fisher-Rao norm: true Fisher vs nngeometry ``PMatImplicit.vTMv(theta)``; empirical Fisher vs
  BackPACK per-sample gradients (``BatchGrad``) dotted with theta.
- JVP cost: relugeom's Fisher-Rao norm (JVP route) over the time of one no-grad forward pass.

nngeometry and BackPACK are benchmark-only dependencies (pip install --no-deps nngeometry
backpack-for-pytorch einops unfoldNd), never runtime dependencies of relugeom.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
from torch import nn

from relugeom.experiments.models import build_model
from relugeom.measures import fisher_rao_norm, kfac


def race(fa, fb, repeat: int):  # noqa: ANN001, ANN201
    """Best-of-``repeat`` times of ``fa`` and ``fb``, run alternately (fair under a fluctuating load)."""
    ta = tb = float("inf")
    oa = ob = None
    for _ in range(repeat):
        t = time.perf_counter()
        oa = fa()
        ta = min(ta, time.perf_counter() - t)
        t = time.perf_counter()
        ob = fb()
        tb = min(tb, time.perf_counter() - t)
    return ta, tb, oa, ob


def kron_rel_err(G1, A1, G2, A2) -> float:  # noqa: ANN001
    """||G1 (x) A1 - G2 (x) A2||_F / ||G1 (x) A1||_F without forming the products."""
    n1 = (G1 * G1).sum() * (A1 * A1).sum()
    n2 = (G2 * G2).sum() * (A2 * A2).sum()
    cross = (G1 * G2).sum() * (A1 * A2).sum()
    return float((n1 + n2 - 2 * cross).clamp_min(0).sqrt() / n1.sqrt())


def sequential_vgg(arch: str) -> nn.Module:
    m = build_model(arch, num_classes=10, in_channels=3, image_size=32, seed=0)
    # at 32x32 the adaptive pool maps 1x1 to 1x1 (the identity), which BackPACK does not support
    return nn.Sequential(*m.features, nn.Flatten(), *m.classifier)


def mlp(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))  # fmt: skip


def bench(name: str, model: nn.Module, X: torch.Tensor, y: torch.Tensor, repeat: int) -> list[tuple]:
    from backpack import backpack, extend
    from backpack.extensions import KFLR, BatchGrad
    from nngeometry.metrics import FIM
    from nngeometry.object import PMatImplicit, PMatKFAC, PVector

    model = model.double().eval()
    for mod in model.modules():
        if hasattr(mod, "inplace"):
            mod.inplace = False
    # every library gets its own copy: nngeometry and BackPACK attach hooks and attributes to the
    # modules they see, which would slow down the others (deep copies, extra hooks in forward passes)
    ng_model = copy.deepcopy(model)
    bp_model = extend(copy.deepcopy(model))
    bp_model2 = extend(copy.deepcopy(model))
    # one batch for every library (BackPACK's factors of a mean loss cannot be summed over batches)
    data = [(X, y)]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=len(y))
    rows = []

    # K-FAC, true Fisher
    t_rg, t_ng, K, Fk = race(lambda: kfac(model, data, fisher="model"),
                             lambda: FIM(ng_model, loader, PMatKFAC, variant="classif_logits"), repeat)
    err_ng = max(kron_rel_err(b.G, b.A, G, A) for b, (A, G) in zip(K.blocks, Fk.data.values()))
    rows.append((name, "K-FAC (true Fisher)", "nngeometry", t_rg, t_ng, err_ng))

    lossf = extend(nn.CrossEntropyLoss())

    def bp_kflr():  # noqa: ANN202
        bp_model.zero_grad()
        with backpack(KFLR()):  # one batch: the factors of the mean loss over all samples
            lossf(bp_model(X), y).backward()
        return {n: mod.weight.kflr for n, mod in bp_model.named_modules() if isinstance(mod, nn.Linear)}

    t_rg, t_bp, _, facs = race(lambda: kfac(model, data, fisher="model"), bp_kflr, repeat)
    err_bp = max(kron_rel_err(b.G, b.A[:-1, :-1], *facs[b.name]) for b in K.blocks if b.name in facs)
    rows.append((name, "K-FAC (true Fisher)", "BackPACK KFLR (Linear blocks)", t_rg, t_bp, err_bp))

    # Fisher-Rao norm, true Fisher
    def ng_fr():  # noqa: ANN202
        return float(FIM(ng_model, loader, PMatImplicit, variant="classif_logits").vTMv(PVector.from_model(ng_model)))

    t_rg, t_ng, fr, fr_ng = race(lambda: fisher_rao_norm(model, data, fisher="model", identity=False), ng_fr, repeat)
    rows.append((name, "Fisher-Rao norm (true)", "nngeometry implicit", t_rg, t_ng, abs(fr.norm2 - fr_ng) / fr_ng))

    # Fisher-Rao norm, empirical Fisher

    def bp_fr():  # noqa: ANN202
        bp_model2.zero_grad()
        with backpack(BatchGrad()):
            lossf(bp_model2(X), y).backward()
        dots = sum((p.grad_batch * p.detach()).flatten(1).sum(1) for p in bp_model2.parameters())
        return float(((dots * len(y)) ** 2).mean())  # grad_batch holds the gradients of loss / N

    def rg_fr():  # noqa: ANN202
        return fisher_rao_norm(model, data, fisher="empirical", identity=False)

    t_rg, t_bp, fre, fr_bp = race(rg_fr, bp_fr, repeat)
    rows.append((name, "Fisher-Rao norm (empirical)", "BackPACK BatchGrad", t_rg, t_bp, abs(fre.norm2 - fr_bp) / fr_bp))

    # JVP cost in forward passes
    def fwd():  # noqa: ANN202
        with torch.no_grad():
            for x, _ in data:
                model(x)

    t_rg, t_fwd, _, _ = race(rg_fr, fwd, repeat)
    rows.append((name, "JVP Fisher-Rao norm", "forward passes", t_rg, t_fwd, float("nan")))
    return rows


def pass_costs(arch: str, n_train: int, max_samples: int, n_probes: int, repeat: int) -> None:
    """Each measure's time over one forward+backward pass over the same measured data (float64, same process),
    next to the estimate `relugeom measures` prints; the default set must cost at most 20 passes per checkpoint."""
    import torch.nn.functional as F

    from relugeom.experiments.data import load_dataset
    from relugeom.measures._common import batches, prepare
    from relugeom.measures.table import DEFAULT_MEASURES, MEASURES, _subset, estimate_costs, measure_rows

    data = load_dataset("digits", augment=False)
    x, y = data.train.x[:n_train], data.train.y[:n_train]
    model = prepare(build_model(arch, num_classes=10, in_channels=1, image_size=8, seed=0))
    tr = batches((x, y))
    tr = [(xb, yb) for xb, yb in tr]
    small = _subset(tr, max_samples)

    def one_pass() -> None:
        model.zero_grad(set_to_none=True)
        for xb, yb in tr:
            F.cross_entropy(model(xb), yb, reduction="sum").backward()
        model.zero_grad(set_to_none=True)

    base = min(_timed(one_pass) for _ in range(max(repeat, 3)))
    est = estimate_costs(MEASURES, n_train=n_train, n_test=0, max_samples=max_samples, n_probes=n_probes,
                         input_numel=int(x[0].numel())).set_index("measure")["passes"]  # fmt: skip
    print(f"cost per checkpoint in forward+backward passes over the measured data ({arch} on digits, {n_train} "
          f"samples, max_samples {max_samples}, n_probes {n_probes}; one pass = {base * 1e3:.0f} ms)")
    print(f"{'measure':<20} {'default':>7} {'seconds':>8} {'passes':>8} {'estimate':>8}")
    total = 0.0
    for name in MEASURES:
        t = min(_timed(lambda n=name: measure_rows(n, model, tr, small, n_probes=n_probes)) for _ in range(repeat))
        default = name in DEFAULT_MEASURES
        total += t / base if default else 0.0
        print(f"{name:<20} {'yes' if default else '':>7} {t:8.2f} {t / base:8.1f} {est[name]:8.1f}")
    print(f"{'default set':<20} {'':>7} {total * base:8.2f} {total:8.1f}   (target: <= 20)")


def _timed(f) -> float:  # noqa: ANN001
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds to a minute)")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--vgg", default="vgg11")
    ap.add_argument("--costs-only", action="store_true", help="only the cost per measure (no peers needed)")
    args = ap.parse_args()
    import importlib.util

    # --quick keeps the defaults' proportions (a quarter of the samples for the costly measures)
    pass_costs("vgg9", 250 if args.quick else 1000, 64 if args.quick else 256, 20, 1 if args.quick else 2)
    if args.costs_only:
        return
    print()

    missing = [m for m in ("nngeometry", "backpack") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"skipped: the peers {', '.join(missing)} are not installed (benchmark-only: pip install --no-deps "
              "nngeometry backpack-for-pytorch einops unfoldNd)")
        return
    warnings.simplefilter("ignore")
    torch.set_default_dtype(torch.float64)  # nngeometry builds helper tensors in the default dtype
    repeat = args.repeat
    g = torch.Generator().manual_seed(0)
    n_mlp, n_vgg = (256, 8) if args.quick else (1024, 16)
    rows = bench("MLP 784-256-256-10", mlp(256), torch.randn(n_mlp, 1, 28, 28, generator=g),
                 torch.randint(0, 10, (n_mlp,), generator=g), repeat)  # fmt: skip
    rows += bench(f"{args.vgg} 3x32x32", sequential_vgg(args.vgg), torch.randn(n_vgg, 3, 32, 32, generator=g),
                  torch.randint(0, 10, (n_vgg,), generator=g), repeat)  # fmt: skip
    print(f"{'model':<22} {'quantity':<28} {'baseline':<30} {'relugeom s':>10} {'baseline s':>10} {'ratio':>7} "
          f"{'rel. error':>10}")  # fmt: skip
    for model, q, base, t1, t2, err in rows:
        print(f"{model:<22} {q:<28} {base:<30} {t1:10.3f} {t2:10.3f} {t1 / t2:7.2f} {err:10.1e}")
    print(f"(threads: {torch.get_num_threads()}, samples: MLP {n_mlp}, VGG {n_vgg}, float64)")


if __name__ == "__main__":
    main()

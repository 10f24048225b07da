"""Toy circulant networks of seed 002 (eqs. 19-20), their preimages and the ``relugeom toy`` verb."""

import numpy as np
import pytest

from relugeom.cli import main
from relugeom.errors import ShapeError
from relugeom.geometry.toy import (
    affine_output_manifold,
    cells,
    circulant_layer,
    flow_field,
    forward,
    layer_nesting,
    point_preimages,
    toy_network,
)


def test_circulant_layers_are_eqs_19_and_20():
    w, b = circulant_layer([1.0, 2.0], 0.5)
    np.testing.assert_array_equal(w, [[1, 2], [2, 1]])
    w, b = circulant_layer([1.0, 2.0, 3.0], -1.0)  # eq. 20: rows (a b c), (c a b), (b c a)
    np.testing.assert_array_equal(w, [[1, 2, 3], [3, 1, 2], [2, 3, 1]])
    np.testing.assert_array_equal(b, [-1, -1, -1])
    # seed 002, eq. 16: all planes meet the identity line at -b / sum(row)
    np.testing.assert_allclose(w @ np.full(3, 1 / 6) + b, 0, atol=1e-12)
    with pytest.raises(ShapeError):
        toy_network(2, params=[[1.0, 0.0]])


def test_cells_land_in_coordinate_subspaces_of_matching_dimension():
    net = toy_network(3, 1, params=[[1.0, 0.0, 0.0, -0.5]])  # the pure-bias case of fig. 3 (W = I)
    c = cells(net[0], n=500, seed=0)
    # a cell with k negative constraints maps into a (3 - k)-dimensional coordinate subspace
    assert np.array_equal((c["y"] == 0).sum(axis=1), c["negatives"])
    assert layer_nesting(toy_network(3, 2, params=[[1, 0, 0, -0.5]] * 2))[0]["nested"]


def test_point_preimages_and_the_affine_manifold_map_where_they_should():
    net = toy_network(3, 2, seed=1)
    ys = np.array([[0.3, 0.0, 0.0]])
    (pre,) = point_preimages(net, ys)
    assert pre.complete and len(pre) >= 1
    for piece in pre:
        pts = piece.sample(10, seed=0)
        np.testing.assert_allclose(np.maximum(forward(net, pts)[-1], 0), np.tile(ys, (10, 1)), atol=1e-6)
    man = affine_output_manifold(net, level=1.0)
    assert man.complete and len(man) > 1
    for piece in man:
        pts = piece.sample(10, seed=0)
        out = np.maximum(forward(net, pts)[-1], 0)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    # brute force: inputs whose output is off M are never inside; inputs moved onto M along a ray from the
    # origin (bisection on the output sum) are inside
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, size=(2000, 3))
    s = np.maximum(forward(net, x)[-1], 0).sum(axis=1)
    assert not man.contains(x[np.abs(s - 1.0) > 1e-2]).any()
    hits = 0
    for d in rng.uniform(0, 1, size=(30, 3)):
        f = lambda t, d=d: np.maximum(forward(net, (t * d)[None])[-1], 0).sum() - 1.0  # noqa: E731
        lo, hi = 0.0, 50.0
        if f(lo) >= 0 or f(hi) <= 0:
            continue
        for _ in range(80):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        assert man.contains(hi * d) or man.contains(lo * d)
        hits += 1
    assert hits > 5


def test_flow_field_zero_region_matches_forward():
    net = toy_network(2, 3, seed=0)
    f = flow_field(net, lim=2.0, n=41)
    out = np.maximum(forward(net, np.stack([f["x"].ravel(), f["y"].ravel()], 1))[-1], 0)
    assert np.array_equal(f["zero"].ravel(), (out == 0).all(axis=1))


@pytest.mark.parametrize("nodes", ["2", "3"])
def test_toy_verb_renders(nodes, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["toy", "--nodes", nodes, "--layers", "2", "--out", str(tmp_path), "--max-pieces", "100"])
        raise SystemExit(0)
    assert (e.value.code or 0) == 0
    names = ["preimages.png"] + (["flows.png"] if nodes == "2" else ["cells.png", "manifold.png"])
    for name in names:
        assert (tmp_path / name).stat().st_size > 0
    with pytest.raises(SystemExit) as e:
        main(["toy", "--nodes", "2", "--params", "1,2", "--out", str(tmp_path)])
    assert e.value.code == 1
    assert "takes 3 numbers" in capsys.readouterr().err

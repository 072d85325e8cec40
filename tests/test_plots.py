"""Plots are valid, non-blank PNGs written atomically; training CSVs are checked."""

import numpy as np
import pytest
from PIL import Image

from tripletface.errors import InputError
from tripletface.metrics import roc_curve
from tripletface.plots import (
    neighbour_affinities,
    pca_2d,
    plot_distance_histograms,
    plot_embedding_maps,
    plot_roc,
    plot_rocs,
    plot_training,
    plot_triplets,
    read_training_csv,
    running_mean,
    tsne_2d,
)


def assert_png(path, min_bytes=10_000):
    """A decodable PNG of real size whose pixels are not all one colour; no temporary files."""
    assert path.stat().st_size > min_bytes
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= 300
        pixels = np.asarray(image.convert("L"))
    assert len(np.unique(pixels)) > 10
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def distances(seed=0):
    rng = np.random.default_rng(seed)
    return rng.gamma(2, 0.2, 300), rng.gamma(6, 0.2, 300)


def test_roc_and_histograms(tmp_path):
    same_d, diff_d = distances()
    d = np.concatenate([same_d, diff_d])
    same = np.arange(600) < 300
    far, tar, _ = roc_curve(d, same)
    assert_png(plot_roc(far, tar, tmp_path / "out" / "roc.png", label="compact"))
    assert_png(plot_distance_histograms(same_d, diff_d, 0.7, tmp_path / "hist.png"))
    other = roc_curve(d + np.where(same, 0.3, 0), same)[:2]
    assert_png(plot_rocs({"semi-hard": (far, tar), "random": other}, tmp_path / "rocs.png"))


def write_csv(path, rows, header="step,loss,active_fraction,lr"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_training_from_a_csv_from_arrays_and_several_runs(tmp_path):
    steps = np.arange(1, 51)
    rows = [(s, 0.2 * np.exp(-s / 20), 0.5 * np.exp(-s / 30), 0.001) for s in steps]
    csv_path = write_csv(tmp_path / "metrics.csv", rows)
    columns = read_training_csv(csv_path)
    np.testing.assert_allclose(columns["step"], steps)
    np.testing.assert_allclose(columns["active_fraction"], [r[2] for r in rows])
    assert_png(plot_training(csv_path, tmp_path / "training.png"))
    arrays = {"step": steps, "loss": 0.1 / steps, "active_fraction": np.full(50, 0.1)}
    assert_png(plot_training(arrays, tmp_path / "arrays.png"))
    assert_png(plot_training({"random": arrays, "semi-hard": csv_path}, tmp_path / "both.png"))


def test_training_metrics_must_have_the_columns(tmp_path):
    with pytest.raises(InputError, match="no rows with columns active_fraction"):
        read_training_csv(write_csv(tmp_path / "a.csv", [(1, 0.5)], header="step,loss"))
    with pytest.raises(InputError, match="no rows with columns step, loss, active_fraction"):
        read_training_csv(write_csv(tmp_path / "b.csv", []))
    gaps = read_training_csv(write_csv(tmp_path / "gaps.csv", [(1, "", 0.5, 0), (2, 0.3, 0.4, 0)]))
    assert np.isnan(gaps["loss"][0]) and gaps["loss"][1] == 0.3
    with pytest.raises(InputError, match="not a number"):
        read_training_csv(write_csv(tmp_path / "c.csv", [(1, "nan?", 0.1, 0)]))
    with pytest.raises(InputError, match="cannot read"):
        read_training_csv(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="lack active_fraction"):
        plot_training({"step": [1], "loss": [1]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_running_mean_matches_a_loop_and_skips_gaps():
    values = np.array([1.0, 3.0, np.nan, 5.0, 7.0, 9.0])
    expected = []
    for i in range(len(values)):
        window = values[max(0, i - 2) : i + 1]
        expected.append(np.nanmean(window))
    np.testing.assert_allclose(running_mean(values, 3), expected)
    np.testing.assert_array_equal(running_mean(values, 1)[[0, 1, 3]], values[[0, 1, 3]])
    assert np.isnan(running_mean(np.array([np.nan, 2.0]), 1)[0])


def test_pca_2d_projects_on_the_top_eigenvectors_of_the_covariance():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 6)) * [5, 3, 1, 0.5, 0.2, 0.1] + 7
    mapped = pca_2d(points)
    centred = points - points.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    for axis in range(2):
        top = vectors[:, -1 - axis]
        np.testing.assert_allclose(np.abs(mapped[:, axis]), np.abs(centred @ top), atol=1e-9)
    assert abs(np.corrcoef(mapped.T)[0, 1]) < 1e-9
    np.testing.assert_array_equal(pca_2d(points), mapped)
    np.testing.assert_allclose(np.abs(pca_2d(-points)), np.abs(mapped), atol=1e-9)


def faces(count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(count)]


def test_triplets_and_embedding_maps(tmp_path):
    a, p, n = faces(3)
    rows = {
        "random\nstep 1": [(a, p, n, 0.3, 0.4), (a, n, p, 0.1, 1.2)],
        "semi-hard": [(a, p, n, 0.3, 0.35)],
    }
    assert_png(plot_triplets(rows, 0.2, tmp_path / "triplets.png"))
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(12), 5)
    maps = {name: (rng.normal(size=(60, 2)), labels) for name in ("before", "after")}
    assert_png(plot_embedding_maps(maps, tmp_path / "map.png", group_size=4))
    with pytest.raises(InputError, match="no triplets"):
        plot_triplets({"empty": []}, 0.2, tmp_path / "none.png")
    with pytest.raises(InputError, match="no maps"):
        plot_embedding_maps({}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_affinities_have_the_asked_perplexity_and_tsne_keeps_clusters_apart():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 8)
    points = rng.normal(size=(6, 32))[labels] + 0.2 * rng.normal(size=(48, 32))
    p = neighbour_affinities(points, perplexity=5)
    assert np.all(np.diag(p) == 0)
    np.testing.assert_allclose(p.sum(1), 1)
    squared = ((points[:, None] - points[None]) ** 2).sum(-1)
    for i in range(48):
        row, others = np.delete(p[i], i), np.delete(squared[i], i)
        assert -np.sum(row * np.log(row)) == pytest.approx(np.log(5), abs=1e-6)
        # A Gaussian of the distance: log p falls on a line of negative slope.
        slope, intercept = np.polyfit(others, np.log(row), 1)
        assert slope < 0
        np.testing.assert_allclose(np.log(row), slope * others + intercept, atol=1e-6)
    mapped = tsne_2d(points, perplexity=5, steps=300)
    assert mapped.shape == (48, 2) and np.isfinite(mapped).all()
    d = np.sqrt(((mapped[:, None] - mapped[None]) ** 2).sum(-1))
    same, other = labels[:, None] == labels[None], ~np.eye(48, dtype=bool)
    # Clusters stay apart: a point's cluster-mates are far nearer than the other clusters. Not
    # every nearest neighbour: the map's last digits follow the BLAS kernel, and a point on a
    # cluster's edge may sit next to another cluster on one CPU and not on the next.
    assert d[same & other].mean() < 0.3 * d[~same].mean()
    np.fill_diagonal(d, np.inf)
    assert np.mean(labels[d.argmin(1)] == labels) >= 0.9
    np.testing.assert_array_equal(tsne_2d(points, perplexity=5, steps=300), mapped)

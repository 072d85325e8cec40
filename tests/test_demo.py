"""The demo pipeline at a tiny size: figures in range, consistent, and reproducible by hand."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from tripletface.data.synthetic import SyntheticFaces
from tripletface.demo import (
    ACTIVE_POINTS,
    FAMILY_SIZE,
    STRATEGIES,
    DemoConfig,
    PixelEncoder,
    active_fractions,
    check_demo_config,
    demo_sets,
    person_name,
    recognize_show,
    run_demo,
    train_config,
)
from tripletface.errors import InputError
from tripletface.models.compact import CompactNet
from tripletface.train import chosen_triplets, training_forward

TINY = {
    "persons": 9,
    "unseen": 6,
    "images": 3,
    "steps": 7,
    "p": 4,
    "k": 2,
    "size": 16,
    "pairs": 60,
    "enrolled": 3,
    "strangers": 2,
    "parallel": False,
    "threads": 1,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny demo's config, figures and the lines it said."""
    config = DemoConfig(**TINY, out=tmp_path_factory.mktemp("demo") / "out")
    lines: list[str] = []
    return config, run_demo(config, say=lines.append), lines


@pytest.mark.slow
def test_the_figures_have_the_documented_shape_and_ranges(tiny):
    config, figures, _ = tiny
    json.dumps(figures, allow_nan=False)
    assert next(iter(figures)) == "seconds" and figures["seconds"] > 0
    assert figures["cpu_seconds"] > 0
    for name in ("pixels", "untrained", *STRATEGIES):
        for key in ("rank1", "rank5", "verification_accuracy", "roc_auc"):
            assert 0 <= figures[name][key] <= 1, (name, key)
        assert figures[name]["rank1"] <= figures[name]["rank5"]
    for strategy in STRATEGIES:
        active = figures[strategy]["active_fraction"]
        assert len(active) == min(ACTIVE_POINTS, config.steps)
        assert all(0 <= a <= 1 for a in active)
        assert 0 < figures[strategy]["train_seconds"] < figures["seconds"]


@pytest.mark.slow
def test_two_worker_processes_give_the_figures_of_one_process(tiny, tmp_path):
    # One thread per training either way: the same arithmetic, so the same figures.
    _, figures, _ = tiny
    settings = {**TINY, "parallel": True}
    parallel = run_demo(DemoConfig(**settings, out=tmp_path), say=lambda line: None)
    for name in ("pixels", "untrained", *STRATEGIES):
        assert parallel[name]["rank1"] == figures[name]["rank1"], name
        assert parallel[name]["roc_auc"] == figures[name]["roc_auc"], name
    for strategy in STRATEGIES:
        assert parallel[strategy]["active_fraction"] == figures[strategy]["active_fraction"]
    assert parallel["recognition"]["answers"] == figures["recognition"]["answers"]
    # The workers' CPU time is counted: each trained, and rendered part of the faces.
    assert parallel["cpu_seconds"] > parallel["random"]["train_seconds"] * 0.5


def test_the_pixel_baseline_is_brute_force_nearest_neighbour(tiny):
    config, figures, _ = tiny
    _, unseen, _ = demo_sets(config)
    images, labels = unseen.tensors()
    pixels = images.flatten(1).double().numpy() / 255
    labels = labels.numpy()
    first = np.arange(0, len(labels), config.images)
    probes = np.setdiff1d(np.arange(len(labels)), first)
    squared = ((pixels[probes, None, :] - pixels[None, first, :]) ** 2).sum(-1)
    expected = np.mean(labels[first][squared.argmin(1)] == labels[probes])
    assert figures["pixels"]["rank1"] == pytest.approx(expected)


def test_the_active_fractions_are_the_logged_ones_averaged_in_order(tiny):
    config, figures, _ = tiny
    for strategy in STRATEGIES:
        with (config.out / strategy / "metrics.csv").open(newline="") as stream:
            logged = [float(row["active_fraction"]) for row in csv.DictReader(stream)]
        assert len(logged) == config.steps
        parts = np.array_split(np.array(logged), ACTIVE_POINTS)
        assert figures[strategy]["active_fraction"] == pytest.approx(
            [part.mean() for part in parts], rel=1e-5
        )


def test_recognition_answers_follow_from_their_distances(tiny):
    config, figures, _ = tiny
    recognition = figures["recognition"]
    answers = recognition["answers"]
    assert [a["enrolled"] for a in answers] == [True] * config.enrolled + [False] * config.strangers
    enrolled_names = {a["person"] for a in answers if a["enrolled"]}
    for a in answers:
        assert a["nearest"] in enrolled_names and a["distance"] >= 0
        assert a["accepted"] == (a["distance"] <= recognition["threshold"])
        assert a["answer"] == (a["nearest"] if a["accepted"] else None)
        expected = a["answer"] == a["person"] if a["enrolled"] else a["answer"] is None
        assert a["right"] == expected
    assert recognition["right"] == sum(a["right"] for a in answers)


def test_plots_are_written_and_the_story_quotes_the_figures(tiny):
    config, figures, lines = tiny
    names = {"training.png", "roc.png", "triplets.png", "map.png"}
    names |= {f"distances_{s}.png" for s in STRATEGIES}
    assert {p.rsplit("/", 1)[-1] for p in figures["plots"]} == names
    for name in names:
        assert (config.out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    story = "\n".join(lines)
    for name in ("pixels", "untrained", *STRATEGIES):
        assert f"{100 * figures[name]['rank1']:.1f}%" in story
    assert story.count(" right") + story.count(" WRONG") == config.enrolled + config.strangers


def test_active_fractions_average_equal_stretches_of_the_run():
    history = [{"active_fraction": float(i)} for i in range(10)]
    assert active_fractions(history) == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert active_fractions(history[:3]) == [0.0, 1.0, 2.0]


def test_the_sets_are_disjoint_and_start_at_a_family_boundary():
    config = DemoConfig(persons=10, unseen=7, enrolled=2, strangers=3)
    train, unseen, show = demo_sets(config)
    ids = [set(s.person_ids) for s in (train, unseen, show)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    families = [{i // FAMILY_SIZE for i in s} for s in ids]
    assert not (families[0] & families[1] or families[1] & families[2])
    assert (len(train), len(unseen), len(show)) == (100, 70, 10)


def test_recognition_enrolls_the_first_pictures_and_rejects_strangers():
    # Without nuisance every picture of a person is the same: distance 0 to the enrolled one.
    show = SyntheticFaces(num_persons=6, images_per_person=2, size=16, nuisance=0)
    answers = recognize_show(PixelEncoder(16), show, enrolled=4, threshold=1e-9)
    assert [a.person for a in answers] == [person_name(i) for i in range(6)]
    assert all(a.right for a in answers)
    assert [a.answer for a in answers] == [person_name(i) for i in range(4)] + [None, None]
    assert all(a.distance == 0 for a in answers[:4]) and all(a.distance > 0 for a in answers[4:])


@pytest.mark.parametrize(
    ("field", "value"),
    [("persons", 1), ("unseen", 4), ("images", 1), ("steps", 0), ("size", 8), ("k", 1.5)],
)
def test_a_setting_that_cannot_work_is_named(field, value):
    with pytest.raises(InputError, match=f"demo: {field} must be"):
        check_demo_config(DemoConfig(**{field: value}))


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        run_demo(DemoConfig(**TINY, out=tmp_path / "file"), say=lambda line: None)


def test_learning_rate_must_be_positive():
    with pytest.raises(InputError, match="lr must be > 0"):
        check_demo_config(DemoConfig(lr=-math.inf))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_chosen_triplets_follow_the_strategy_on_training_mode_embeddings(strategy):
    faces = SyntheticFaces(num_persons=6, images_per_person=3, size=16)
    images, labels = faces.tensors()
    torch.manual_seed(0)
    encoder = CompactNet(embedding_dim=8, input_size=16, width=4).eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    settings = train_config(DemoConfig(**TINY), strategy)
    triplets = chosen_triplets(encoder, images, labels, settings, count=4)
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())
    assert not encoder.training
    with torch.no_grad():
        torch.manual_seed(0)
        embeddings = training_forward(
            CompactNet(embedding_dim=8, input_size=16, width=4).train(), images, settings
        )
    anchors = [labels[a] for a, _, _, _, _ in triplets]
    assert len(triplets) == 4 and len(set(anchors)) == 4
    for a, p, n, d_ap, d_an in triplets:
        assert labels[a] == labels[p] != labels[n] and a != p
        assert d_ap == pytest.approx(
            float((embeddings[a] - embeddings[p]).square().sum()), abs=1e-4
        )
        assert d_an == pytest.approx(
            float((embeddings[a] - embeddings[n]).square().sum()), abs=1e-4
        )
        if strategy == "semihard":
            negatives = [j for j in range(len(labels)) if labels[j] != labels[a]]
            d = {j: float((embeddings[a] - embeddings[j]).square().sum()) for j in negatives}
            beyond = [j for j in negatives if d[j] > d_ap]
            expected = min(beyond, key=d.get) if beyond else max(negatives, key=d.get)
            assert d[n] == pytest.approx(d[expected], abs=1e-4)

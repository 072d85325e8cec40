"""Training: the step, the schedule, the loop's files, exact resuming, and a run that learns."""

import csv
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import Dataset

from tripletface.data.synthetic import SyntheticFaces
from tripletface.errors import InputError
from tripletface.metrics import roc_auc
from tripletface.models import load_encoder
from tripletface.models.checkpoint import load_checkpoint
from tripletface.models.compact import CompactNet
from tripletface.train import (
    METRICS,
    TrainConfig,
    augment,
    check_config,
    check_steps_left,
    embedding_spread,
    fit,
    initial_encoder,
    lr_factor,
    step_batch,
    train_step,
    training_forward,
    triplet_rows,
)

TIMING = {"images_per_s", "seconds"}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, above all on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Blobs(Dataset):
    """Persons as noisy colour patterns, items decoded on access (no tensors()), any image size."""

    def __init__(self, persons: int = 12, per_person: int = 4, size: int = 24, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        means = torch.rand(persons, 3, 4, 4, generator=generator) * 255
        means = torch.nn.functional.interpolate(means, size=(size, size), mode="bilinear")
        noise = torch.randn(persons * per_person, 3, size, size, generator=generator) * 40
        self.images = (means.repeat_interleave(per_person, 0) + noise).clamp(0, 255).byte()
        self.labels = [i // per_person for i in range(persons * per_person)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def tiny(**changes) -> TrainConfig:
    """A config that trains a narrow CompactNet on 24 x 24 images in a fraction of a second."""
    settings = dict(size=24, p=4, k=2, steps=6, encoder_kwargs={"width": 4}, checkpoint_every=2)
    return TrainConfig(**{**settings, **changes})


def test_cosine_schedule_falls_from_one_to_zero():
    values = [lr_factor("cosine", step, 100) for step in range(101)]
    assert values[0] == 1.0 and values[100] == pytest.approx(0.0, abs=1e-12)
    assert values[50] == pytest.approx(0.5)
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    assert [lr_factor("step", s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


def test_warmup_rises_linearly_then_the_schedule_starts():
    assert [lr_factor("constant", s, 100, warmup=4) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert lr_factor("cosine", 4, 104, warmup=4) == 1.0


@given(st.integers(1, 12), st.integers(1, 5), st.integers(0, 2**31))
def test_spread_is_the_mean_squared_distance_over_all_pairs(n, d, seed):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    brute = sum(float((a - b).square().sum()) for a in x for b in x) / n**2
    assert embedding_spread(x) == pytest.approx(brute, rel=1e-9, abs=1e-12)


def test_augment_keeps_shape_dtype_and_is_a_function_of_the_generator():
    images = Blobs(size=32).images[:8]
    out = augment(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment(images, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, images)
    flat = torch.full((2, 3, 16, 16), 77, dtype=torch.uint8)
    assert torch.equal(augment(flat, torch.Generator().manual_seed(0)), flat)


def test_train_step_is_a_function_of_batch_and_state():
    data = Blobs()
    images, labels = data.images[:8], torch.tensor(data.labels[:8])
    records = []
    for _ in range(2):
        torch.manual_seed(0)
        model = CompactNet(input_size=24, width=4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        records.append(train_step(model, optimizer, images, labels, tiny()))
        records.append(model.fingerprint())
    assert records[0] == records[2] and records[1] == records[3]
    assert {"loss", "active_fraction", "considered", "active", "mean_ap", "mean_an", "spread"} <= (
        set(records[0])
    )


def test_train_step_lowers_the_loss_on_its_batch():
    data = Blobs()
    images, labels = data.images[:16], torch.tensor(data.labels[:16])
    torch.manual_seed(0)
    model = CompactNet(input_size=24, width=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    config = tiny(strategy="all", margin=0.5)
    losses = [train_step(model, optimizer, images, labels, config)["loss"] for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]


def test_distillation_adds_the_mean_squared_distance_of_the_batch_to_its_targets():
    data = Blobs()
    images, labels = data.images[:8], torch.tensor(data.labels[:8])
    targets = torch.nn.functional.normalize(torch.randn(8, 128, dtype=torch.float64), dim=1)
    records = {}
    for weight in (0.0, 3.0):
        torch.manual_seed(0)
        model = CompactNet(input_size=24, width=4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        config = tiny(distill=weight, strategy="all", margin=0.5)
        model.train()
        with torch.no_grad():
            start = training_forward(model, images, config).double()
        brute = sum(float((start[i] - targets[i]).square().sum()) for i in range(8)) / 8
        records[weight] = train_step(model, optimizer, images, labels, config, targets.float())
        assert records[weight]["distillation"] == pytest.approx(brute, rel=1e-5)
        records[weight]["moved"] = model.fingerprint()
    # The triplet part is the same; the distillation term changes the step.
    assert records[0.0]["loss"] == pytest.approx(records[3.0]["loss"])
    assert records[0.0]["moved"] != records[3.0]["moved"]


def test_distillation_pulls_the_embeddings_onto_their_targets():
    data = Blobs(persons=6, per_person=4)
    torch.manual_seed(1)
    targets = torch.nn.functional.normalize(torch.randn(len(data), 128), dim=1)
    config = tiny(distill=100.0, steps=40, margin=0.0, lr=1e-2, schedule="constant")
    result = fit(config, data, progress=False, targets=targets)
    first, last = result.history[0]["distillation"], result.history[-1]["distillation"]
    assert last < 0.5 * first
    with pytest.raises(InputError, match="one target embedding per training image \\(24\\), got 3"):
        fit(config, data, progress=False, targets=targets[:3])
    with pytest.raises(InputError, match="got none"):
        fit(config, data, progress=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"p": 1}, "p = 1"),
        ({"k": 1}, "k = 1"),
        ({"strategy": "hardest"}, "hardest"),
        ({"optimizer": "lbfgs"}, "lbfgs"),
        ({"schedule": "linear"}, "linear"),
        ({"epochs": 2}, "either steps or epochs"),
        ({"steps": None}, "either steps or epochs"),
        ({"lr": 0.0}, "lr"),
        ({"margin": -0.1}, "margin"),
        ({"distill": -1.0}, "distill = -1.0"),
        ({"distill": float("nan")}, "distill = nan"),
        ({"held_apart": -2}, "held_apart = -2"),
        ({"condition": "fog"}, "unknown camera condition 'fog'"),
        ({"threads": 0}, "threads = 0 must be >= 1"),
        ({"threads": -2}, "threads = -2 must be >= 1"),
        ({"encoder": "dlib-resnet"}, "size = 24: encoder dlib-resnet takes 150 x 150 images only"),
    ],
)
def test_bad_settings_are_named(changes, message):
    with pytest.raises(InputError, match=message):
        check_config(tiny(**changes))


def test_fit_writes_metrics_and_a_checkpoint_that_loads(tmp_path):
    result = fit(tiny(out=str(tmp_path)), Blobs(size=40), progress=False)
    with (tmp_path / "metrics.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == METRICS
    assert [int(row["step"]) for row in rows] == list(range(1, 7))
    assert all(0 <= float(row["active_fraction"]) <= 1 for row in rows)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 6 and state["config"]["p"] == 4 and state["config"]["size"] == 24
    assert state["optimizer"] is not None and state["scheduler"] is not None
    encoder = load_encoder(tmp_path / "last.pt")
    assert encoder.fingerprint() == result.encoder.fingerprint()
    summary = result.summary()
    assert summary["step"] == 6 and summary["checkpoint"] == str(tmp_path / "last.pt")
    assert not result.collapsed
    # TensorBoard (a dev dependency) gets the same curves as metrics.csv.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    for key in ("loss", "active_fraction", "mean_ap", "mean_an", "lr"):
        logged = [(event.step, event.value) for event in events.Scalars(f"train/{key}")]
        expected = [(int(row["step"]), float(row[key])) for row in rows]
        assert logged == [(step, pytest.approx(value, rel=1e-5)) for step, value in expected]


@pytest.mark.parametrize("strategy, dataset", [("random", Blobs), ("semihard", None)])
def test_resuming_continues_exactly(tmp_path, strategy, dataset):
    """N steps in one go give the same weights as N/2, a checkpoint, and N/2 more."""
    data = Blobs() if dataset else SyntheticFaces(12, 4, size=24, seed=1)
    config = dict(steps=8, strategy=strategy, augment=True, checkpoint_every=3)
    straight = fit(tiny(out=str(tmp_path / "a"), **config), data, progress=False)
    halted = fit(
        tiny(out=str(tmp_path / "b"), **config),
        data,
        progress=False,
        callback=lambda record: record["step"] == 4,
    )
    assert halted.step == 4
    resumed = fit(tiny(out=str(tmp_path / "b"), **config), data, progress=False, resume=True)
    assert resumed.step == 8
    assert resumed.encoder.fingerprint() == straight.encoder.fingerprint()

    def logged(run):
        with (tmp_path / run / "metrics.csv").open() as stream:
            return [
                {k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(stream)
            ]

    assert logged("a") == logged("b")


def test_extending_a_finished_cosine_run_restarts_from_its_new_schedule(tmp_path):
    """The lr saved at the end of a cosine run is 0; a longer resumed run must not keep it."""
    fit(tiny(out=str(tmp_path), steps=4, schedule="cosine"), Blobs(), progress=False)
    rates = []
    fit(
        tiny(out=str(tmp_path), steps=8, schedule="cosine"),
        Blobs(),
        progress=False,
        resume=True,
        callback=lambda record: rates.append(record["lr"]),
    )
    expected = [tiny().lr * lr_factor("cosine", step, 8) for step in range(4, 8)]
    assert rates == pytest.approx(expected)
    assert rates[0] > 0


def test_resume_without_a_checkpoint_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        fit(tiny(out=str(tmp_path)), Blobs(), progress=False, resume=True)


@pytest.mark.parametrize(
    "length, message",
    [
        ({"steps": 2}, "last.pt is at step 2 already: give --steps above 2"),
        ({"steps": None, "epochs": 1}, "at step 2 already and --epochs 1 ends at step 1"),
    ],
)
def test_resuming_a_run_at_its_end_already_is_an_input_error_that_writes_nothing(
    tmp_path, length, message
):
    data = Blobs(persons=4, per_person=2)  # one P x K batch an epoch
    fit(tiny(out=str(tmp_path), steps=2), data, progress=False)
    before = {path.name: path.read_bytes() for path in tmp_path.glob("*.*")}
    with pytest.raises(InputError, match=message):
        fit(tiny(out=str(tmp_path), **length), data, progress=False, resume=True)
    assert {path.name: path.read_bytes() for path in tmp_path.glob("*.*")} == before


def test_steps_left_in_epochs_are_checked_once_the_epoch_length_is_known(tmp_path):
    last, epochs = tmp_path / "last.pt", tiny(steps=None, epochs=2)
    check_steps_left(last, 6, epochs)  # before the data loads: nothing to tell yet
    check_steps_left(last, 5, epochs, steps_per_epoch=3)
    with pytest.raises(InputError, match="at step 6 already and --epochs 2 ends at step 6"):
        check_steps_left(last, 6, epochs, steps_per_epoch=3)
    with pytest.raises(InputError, match="at step 6 already: give --steps above 6"):
        check_steps_left(last, 6, tiny(steps=6), steps_per_epoch=100)


def test_frozen_parameters_stay_and_scaled_groups_get_their_rate():
    encoder = CompactNet(input_size=24, width=4)
    stem = encoder.features[0].weight.detach().clone()
    seen = []
    config = tiny(freeze=["features.0."], lr_scale={"head": 0.5}, optimizer="sgd", lr=0.1)
    result = fit(config, Blobs(), encoder, progress=False, callback=seen.append)
    assert torch.equal(result.encoder.features[0].weight, stem)
    assert not result.encoder.features[0].weight.requires_grad
    assert seen[0]["lr"] == pytest.approx(0.1)


def test_collapsed_embeddings_are_warned_about():
    encoder = CompactNet(input_size=24, width=4)
    with torch.no_grad():
        encoder.head[-1].weight.zero_()
    # With the last layer frozen at zero every image maps to normalize(bias): one point.
    with pytest.warns(RuntimeWarning, match="collapsed"):
        result = fit(tiny(freeze=["head"]), Blobs(), encoder, progress=False)
    assert result.collapsed


def test_epochs_count_passes_over_the_data():
    data = Blobs(persons=8, per_person=4)
    result = fit(tiny(steps=None, epochs=2), data, progress=False)
    # 8 persons x 2 groups of K=2 each = 16 groups, 4 per batch: 4 batches an epoch.
    assert result.step == 8
    assert [row["epoch"] for row in result.history] == [0] * 4 + [1] * 4


def pair_scores(encoder, data: SyntheticFaces) -> float:
    """ROC AUC of all pairs of a held-out set by squared distance (lower = same person)."""
    images, labels = data.tensors()
    emb = encoder.embed(images)
    upper = torch.triu_indices(len(labels), len(labels), offset=1)
    distances = torch.cdist(emb, emb).square()[upper[0], upper[1]]
    same = (labels[:, None] == labels[None, :])[upper[0], upper[1]]
    return roc_auc(distances, same)


@pytest.mark.slow
def test_a_tiny_run_learns_to_tell_unseen_persons_apart():
    """ROC AUC on persons never seen in training: about chance untrained, above 0.9 trained."""
    # Mild nuisance learns fast; close lookalikes keep an untrained encoder near chance.
    faces = {"size": 32, "seed": 0, "nuisance": 0.6, "redrawn_groups": 3, "jitter": 0.08}
    size = faces["size"]
    train = SyntheticFaces(120, 6, **faces)
    unseen = SyntheticFaces(30, 4, first_person=50_000, **faces)
    config = TrainConfig(size=size, p=16, k=4, steps=150, lr=3e-3, encoder_kwargs={"width": 16})
    torch.manual_seed(config.seed)
    before = pair_scores(CompactNet(input_size=size, width=16), unseen)
    result = fit(config, train, progress=False)
    after = pair_scores(result.encoder, unseen)
    assert before < 0.8 and after > 0.9 and after - before > 0.15, (before, after)
    assert result.seconds < 60
    active = [row["active_fraction"] for row in result.history]
    assert sum(active[-20:]) < sum(active[:20])
    assert not math.isnan(result.history[-1]["loss"])


def test_an_interrupt_between_steps_keeps_that_step(tmp_path):
    def interrupt(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            tiny(out=str(tmp_path), checkpoint_every=100),
            Blobs(),
            progress=False,
            callback=interrupt,
        )
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    assert fit(tiny(out=str(tmp_path)), Blobs(), progress=False, resume=True).step == 6


class Recorded(Blobs):
    """Blobs that remember which items were read, in order."""

    def __init__(self):
        super().__init__(persons=6, per_person=3)
        self.read: list[int] = []

    def __getitem__(self, index: int):
        self.read.append(index)
        return super().__getitem__(index)


class Drawn(Recorded):
    """Recorded items that also remember the epoch they were drawn for (``set_epoch``)."""

    def __init__(self):
        super().__init__()
        self.epoch = -1
        self.served: list[tuple[int, int]] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int):
        self.served.append((self.epoch, index))
        return super().__getitem__(index)


def test_step_batch_names_the_items_fit_trains_each_step_on():
    data = Recorded()
    config = tiny(p=3, k=2, steps=9)
    fit(config, data, progress=False)
    expected = [i for step in range(1, 10) for i in step_batch(config, data, step)]
    assert data.read == expected
    assert len({tuple(step_batch(config, data, s)) for s in range(1, 10)}) > 1


def test_a_data_set_that_draws_each_epoch_is_told_the_epoch_by_fit_and_step_batch():
    data, config = Drawn(), tiny(p=3, k=2, steps=9)
    fit(config, data, progress=False)
    trained, data.served = data.served, []
    for step in range(1, 10):
        batch = step_batch(config, data, step)
        data.served += [(data.epoch, index) for index in batch]
    assert data.served == trained
    assert len({epoch for epoch, _ in trained}) > 1  # 18 items in batches of 6: several epochs


def test_bfloat16_trains_float32_weights_on_float32_embeddings():
    data = Blobs()
    model = CompactNet(embedding_dim=8, input_size=24, width=4)
    images = data.images[:8]
    with torch.no_grad():
        embeddings = training_forward(model, images, tiny(precision="bfloat16"))
        exact = training_forward(model, images, tiny())
    assert embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(8))
    # bfloat16 keeps 8 bits of mantissa: close to the float32 forward, not equal.
    assert 0 < float((embeddings - exact).abs().max()) < 0.05
    run = fit(tiny(precision="bfloat16", steps=4), data, progress=False)
    assert all(p.dtype == torch.float32 for p in run.encoder.parameters())
    assert all(math.isfinite(row["loss"]) for row in run.history)


def test_an_unknown_precision_is_refused():
    with pytest.raises(InputError, match="precision 'half': use one of float32, bfloat16"):
        check_config(tiny(precision="half"))


def test_initial_encoder_is_where_fit_starts_and_rows_show_first_and_last_batch():
    data, config = Blobs(), tiny(steps=5)
    start = initial_encoder(config)
    alone, given = fit(config, data, progress=False), fit(config, data, start, progress=False)
    trained = given.encoder.state_dict()
    for name, weights in alone.encoder.state_dict().items():
        assert torch.equal(weights, trained[name]), name
    rows = triplet_rows(data, {"semihard": (initial_encoder(config), alone)}, count=3)
    assert list(rows) == ["semihard\nstep 1", "semihard\nstep 5"]
    first = step_batch(config, data, 1)
    anchor, positive, negative, d_ap, d_an = rows["semihard\nstep 1"][0]
    assert anchor.shape == (24, 24, 3) and anchor.dtype == np.uint8 and d_ap >= 0 <= d_an
    assert not np.array_equal(positive, negative)
    assert any(np.array_equal(anchor, data.images[i].permute(1, 2, 0).numpy()) for i in first)
    assert all(len(row) == 3 and 0 <= row[0][3] <= 4 for row in rows.values())

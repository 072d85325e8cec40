import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripletface.tracking import (
    Tracker,
    TrackEvent,
    associate,
    box_iou,
    summarize,
    vote,
)

coords = st.integers(0, 60)


@st.composite
def boxes(draw, max_size=6):
    count = draw(st.integers(0, max_size))
    out = []
    for _ in range(count):
        left, top = draw(coords), draw(coords)
        out.append((left, top, left + draw(st.integers(1, 40)), top + draw(st.integers(1, 40))))
    return np.array(out, dtype=np.float64).reshape(-1, 4)


def brute_iou(a, b) -> float:
    """IoU by counting the unit cells of integer boxes."""
    cells_a = set(itertools.product(range(int(a[0]), int(a[2])), range(int(a[1]), int(a[3]))))
    cells_b = set(itertools.product(range(int(b[0]), int(b[2])), range(int(b[1]), int(b[3]))))
    return len(cells_a & cells_b) / len(cells_a | cells_b)


@given(boxes(4), boxes(4))
def test_iou_counts_shared_pixels(first, second):
    overlap = box_iou(first, second)
    assert overlap.shape == (len(first), len(second))
    for i, j in np.ndindex(*overlap.shape):
        assert overlap[i, j] == pytest.approx(brute_iou(first[i], second[j]))


def unit(seed: int, dim: int = 8) -> np.ndarray:
    row = np.random.default_rng(seed).normal(size=dim)
    return row / np.linalg.norm(row)


@given(boxes(), boxes(), st.integers(0, 10_000))
def test_association_uses_each_track_and_detection_once(tracks, detections, seed):
    rng = np.random.default_rng(seed)
    distance = rng.uniform(0, 2, size=(len(tracks), len(detections)))
    distance[rng.random(distance.shape) < 0.3] = np.nan
    result = associate(box_iou(tracks, detections), distance, 0.3, 1.0, 0.5)
    rows = [i for i, _ in result.pairs] + list(result.tracks)
    cols = [j for _, j in result.pairs] + list(result.detections)
    assert sorted(rows) == list(range(len(tracks)))
    assert sorted(cols) == list(range(len(detections)))
    overlap = box_iou(tracks, detections)
    for i, j in result.pairs:
        assert overlap[i, j] >= 0.3 or distance[i, j] <= 0.5


@given(boxes(), st.integers(-3, 3), st.integers(-3, 3))
def test_separate_boxes_follow_their_own_faces(tracks, dx, dy):
    overlap = box_iou(tracks, tracks)
    np.fill_diagonal(overlap, 0)
    if (overlap > 0).any() or ((tracks[:, 2:] - tracks[:, :2]) < 20).any():
        return  # the property is about separate boxes large enough for a small shift
    moved = tracks + np.array([dx, dy, dx, dy])
    result = associate(box_iou(tracks, moved))
    assert sorted(result.pairs) == [(i, i) for i in range(len(tracks))]


def test_ambiguous_boxes_are_decided_by_the_nearer_face():
    tracks = np.array([[0, 0, 40, 40], [20, 0, 60, 40]], float)
    detections = np.array([[10, 0, 50, 40], [12, 0, 52, 40]], float)
    overlap = box_iou(tracks, detections)
    assert (overlap >= 0.3).all()  # every detection overlaps both tracks
    distance = np.array([[0.9, 0.05], [0.04, 1.1]])
    assert associate(overlap, distance, max_distance=0.5).pairs == ((1, 0), (0, 1))
    # a face far from both tracks' faces joins neither: it starts its own track
    far = np.array([[0.9, 0.05], [0.8, 1.1]])
    result = associate(overlap, far, max_distance=0.5)
    assert result.pairs == ((0, 1),) and result.detections == (0,)


def test_a_face_away_from_every_box_joins_only_a_matching_lost_track():
    tracks = np.array([[0, 0, 40, 40]], float)
    detections = np.array([[200, 0, 240, 40]], float)
    overlap = box_iou(tracks, detections)
    assert associate(overlap, np.array([[0.05]]), reid_distance=0.1).pairs == ((0, 0),)
    assert associate(overlap, np.array([[0.3]]), reid_distance=0.1).pairs == ()
    assert associate(overlap, None, reid_distance=0.1).pairs == ()


def test_vote_is_the_majority_and_one_bad_frame_does_not_flip_it():
    votes = [("ada", 0.05), ("ada", 0.07), ("bob", 0.02), ("ada", 0.06), (None, 0.4)]
    assert vote(votes) == ("ada", pytest.approx(0.06))
    assert vote([("ada", 0.1), (None, 0.3)]) == ("ada", 0.1)  # a tie goes to the nearer
    assert vote([]) == (None, None)


@given(st.lists(st.tuples(st.sampled_from(["ada", "bob", None]), st.floats(0, 4)), max_size=9))
def test_vote_ignores_the_order_of_frames(votes):
    assert vote(votes) == vote(sorted(votes, key=lambda v: (str(v[0]), v[1]))[::-1])
    if votes:
        name, _ = vote(votes)
        counts = [n for n, _ in votes]
        assert counts.count(name) == max(counts.count(n) for n in set(counts))


def run(tracker: Tracker, steps):
    """Feed (time, [(box, embedding)]) detection steps; returns the track id of every detection
    per step and the ended events."""
    ids, ended = [], []
    for time, faces in steps:
        boxes = [box for box, _ in faces]
        embeddings = [e for _, e in faces]
        votes = [("ada", 0.05) if e is not None else None for e in embeddings]
        update = tracker.update(time, boxes, embeddings, votes)
        ids.append(update.joined)
        ended += update.ended
    return ids, ended + tracker.finish()


def test_crossing_faces_keep_their_tracks():
    a, b = unit(1), unit(2)
    steps = []
    for step in range(21):
        x = 4.0 * step  # a goes right, b goes left: their boxes overlap in the middle steps
        faces = [((x, 0, x + 40, 40), a), ((80 - x, 2, 120 - x, 42), b)]
        steps.append((step * 0.2, faces[::-1] if step % 2 else faces))
    ids, ended = run(Tracker(embed_every=0), steps)
    order = [joined if s % 2 == 0 else joined[::-1] for s, joined in enumerate(ids)]
    assert all(pair == [1, 2] for pair in order)
    assert len(ended) == 2


def test_without_embeddings_crossing_boxes_still_get_one_track_each():
    steps = []
    for step in range(21):
        x = 4.0 * step
        steps.append((step * 0.2, [((x, 0, x + 40, 40), None), ((80 - x, 2, 120 - x, 42), None)]))
    ids, ended = run(Tracker(), steps)
    assert all(sorted(joined) == [1, 2] for joined in ids)
    assert len(ended) == 2


def test_a_face_that_comes_back_soon_keeps_its_track_later_gets_a_new_one():
    a = unit(3)
    tracker = Tracker(patience=1.0, reid_distance=0.1)
    box, elsewhere = (0, 0, 40, 40), (150, 60, 190, 100)
    steps = [(0.0, [(box, a)]), (0.2, [(box, a)]), (0.4, []), (0.8, [(elsewhere, a)])]
    ids, _ = run(tracker, steps)
    assert ids == [[1], [1], [], [1]]  # hidden for 0.6 s, came back elsewhere: same face
    tracker = Tracker(patience=1.0, reid_distance=0.1)
    steps = [(0.0, [(box, a)]), (0.2, [(box, a)]), (0.8, []), (1.4, []), (2.0, [(box, a)])]
    ids, ended = run(tracker, steps)
    assert ids[-1] == [2]
    assert [(e.track, e.first, e.last) for e in ended] == [(1, 0.0, 0.2), (2, 2.0, 2.0)]


def test_a_different_face_where_one_was_lost_starts_its_own_track():
    tracker = Tracker(reid_distance=0.1)
    steps = [(0.0, [((0, 0, 40, 40), unit(4))]), (0.4, [((99, 0, 139, 40), unit(5))])]
    ids, _ = run(tracker, steps)
    assert ids == [[1], [2]]


def test_faces_are_embedded_when_new_ambiguous_or_due():
    tracker = Tracker(embed_every=1.0)
    assert tracker.wanted(0.0, [(0, 0, 40, 40)]) == [True]  # no track yet
    tracker.update(0.0, [(0, 0, 40, 40)], [unit(6)], [("ada", 0.05)])
    assert tracker.wanted(0.5, [(2, 0, 42, 40), (300, 0, 340, 40)]) == [False, True]
    assert tracker.wanted(1.0, [(2, 0, 42, 40)]) == [True]  # a second since its embedding
    tracker.update(0.5, [(60, 0, 100, 40)], [unit(7)], [(None, 0.5)])
    # a box overlapping both tracks is ambiguous, whatever their embeddings' age
    assert tracker.wanted(0.6, [(20, 0, 80, 40)]) == [True]


def test_a_track_records_its_frames_first_last_and_voted_name():
    tracker = Tracker(patience=0.5)
    tracker.update(1.0, [(0, 0, 40, 40)], [unit(8)], [("ada", 0.04)])
    for _ in range(4):
        tracker.carry({1: (1, 0, 41, 40)})
    tracker.update(1.2, [(2, 0, 42, 40)], [unit(8)], [("ada", 0.06)])
    tracker.carry({})
    update = tracker.update(2.0, [], [], [])
    assert update.ended == [TrackEvent(1, "ada", 1.0, 1.2, 5, pytest.approx(0.05))]
    assert tracker.tracks == []
    assert update.ended[0].to_json() == {
        "track": 1,
        "name": "ada",
        "first": 1.0,
        "last": 1.2,
        "frames": 5,
        "distance": 0.05,
    }


def test_summary_adds_up_each_persons_tracks():
    events = [
        TrackEvent(1, "ada", 1.0, 3.0, 50, 0.05),
        TrackEvent(2, None, 0.5, 1.0, 12, 0.4),
        TrackEvent(3, "ada", 5.0, 6.5, 37, 0.06),
        TrackEvent(4, "bob", 0.0, 2.0, 50, 0.05),
        TrackEvent(5, None, 4.0, 4.5, 12, 0.5),
    ]
    summary = summarize(events)
    assert [(s.name, s.first, s.last, s.seconds, s.tracks) for s in summary] == [
        ("bob", 0.0, 2.0, 2.0, 1),
        ("ada", 1.0, 6.5, 3.5, 2),
        (None, 0.5, 4.5, 1.0, 2),
    ]
    assert summary[1].to_json() == {
        "name": "ada",
        "first": 1.0,
        "last": 6.5,
        "seconds": 3.5,
        "tracks": 2,
    }

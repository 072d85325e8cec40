"""Following faces from frame to frame: box overlap, association, the life of a track, its name.

No images and no I/O: boxes are (left, top, right, bottom) pixels, times are seconds, embeddings
are unit-length rows and distances squared Euclidean between them, as everywhere in tripletface.

A detection joins the track whose box it overlaps (intersection over union). Where boxes are
ambiguous (a detection overlaps several tracks, or a track several detections, as when two faces
cross) the embedding distance decides; a detection that overlaps no track joins a recently lost
one whose face it matches (a face hidden for a moment, or one that jumped), else starts a track.
A track ends when no detection has joined it for ``patience`` seconds. Its name is a vote over
the names of all its embeddings, so one blurred frame does not flip it.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """N x M intersection over union of N x 4 and M x 4 boxes (left, top, right, bottom)."""
    a = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class Association:
    """Which detection joined which track: (track row, detection row) pairs, and the rows left."""

    pairs: tuple[tuple[int, int], ...]
    tracks: tuple[int, ...]
    detections: tuple[int, ...]


def associate(
    overlap: np.ndarray,
    distance: np.ndarray | None = None,
    min_iou: float = 0.3,
    max_distance: float = float("inf"),
    reid_distance: float = 0.0,
) -> Association:
    """Match T tracks to D detections given their T x D IoU and (optional, NaN where unknown)
    T x D embedding distances; each track and each detection is used at most once.

    Overlapping pairs (IoU >= min_iou) whose track and detection overlap nothing else match at
    once. Among ambiguous ones, the nearest embeddings match first (pairs farther than
    ``max_distance`` never match); pairs without both embeddings go by IoU. Then tracks and
    detections left without any overlap match by distance alone, up to ``reid_distance``.
    """
    overlap = np.asarray(overlap, dtype=np.float64)
    rows, cols = overlap.shape
    distance = (
        np.full(overlap.shape, np.nan) if distance is None else np.asarray(distance, np.float64)
    )
    candidate = overlap >= min_iou
    crowded = (candidate.sum(1, keepdims=True) > 1) | (candidate.sum(0, keepdims=True) > 1)
    ranked = []
    for i, j in zip(*np.nonzero(candidate), strict=True):
        known = not np.isnan(distance[i, j])
        if not crowded[i, j]:
            ranked.append(((0, -overlap[i, j]), i, j))
        elif known and distance[i, j] <= max_distance:
            ranked.append(((1, distance[i, j]), i, j))
        elif not known:
            ranked.append(((2, -overlap[i, j]), i, j))
    isolated_rows = ~candidate.any(1)
    isolated_cols = ~candidate.any(0)
    for i, j in zip(*np.nonzero(distance <= reid_distance), strict=True):
        if isolated_rows[i] and isolated_cols[j]:
            ranked.append(((3, distance[i, j]), i, j))
    pairs, used_rows, used_cols = [], set(), set()
    for _, i, j in sorted(ranked, key=lambda item: item[0]):
        if i not in used_rows and j not in used_cols:
            pairs.append((int(i), int(j)))
            used_rows.add(i)
            used_cols.add(j)
    return Association(
        tuple(pairs),
        tuple(i for i in range(rows) if i not in used_rows),
        tuple(j for j in range(cols) if j not in used_cols),
    )


def vote(votes: Sequence[tuple[str | None, float]]) -> tuple[str | None, float | None]:
    """The name most of (name or None, distance) votes give, ties to the nearer one (then to a
    name, then alphabetically), and the median distance of its votes; (None, None) without."""
    if not votes:
        return None, None
    counts = Counter(name for name, _ in votes)

    def median(name: str | None) -> float:
        return float(np.median([d for n, d in votes if n == name]))

    name = min(counts, key=lambda n: (-counts[n], median(n), n is None, n or ""))
    return name, median(name)


@dataclass(frozen=True)
class TrackEvent:
    """A track that ended: id, the name voted (None: unknown), first and last time it was
    detected (seconds), frames it was shown in between, and the median distance of its name."""

    track: int
    name: str | None
    first: float
    last: float
    frames: int
    distance: float | None

    def to_json(self) -> dict:
        """The event as one JSON object (times in seconds, rounded to milliseconds)."""
        distance = None if self.distance is None else round(self.distance, 6)
        return {
            "track": self.track,
            "name": self.name,
            "first": round(self.first, 3),
            "last": round(self.last, 3),
            "frames": self.frames,
            "distance": distance,
        }


@dataclass
class Track:
    """A face followed over frames: its box now, when it was first and last detected, how many
    frames it was shown in between, detection rounds that missed it since, embeddings, votes."""

    id: int
    box: Box
    first: float
    last: float
    embedded: float = float("-inf")
    frames: int = 1
    shown: int = 1
    misses: int = 0
    embeddings: list[np.ndarray] = field(default_factory=list)
    votes: list[tuple[str | None, float]] = field(default_factory=list)

    def embedding(self) -> np.ndarray | None:
        """The unit-length mean of its embeddings, or None before the first one."""
        if not self.embeddings:
            return None
        mean = np.mean(self.embeddings, axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def name(self) -> tuple[str | None, float | None]:
        """(name, distance) as voted by its embeddings so far."""
        return vote(self.votes)

    def event(self) -> TrackEvent:
        """This track as an ended one."""
        name, distance = self.name()
        return TrackEvent(self.id, name, self.first, self.last, self.frames, distance)


@dataclass(frozen=True)
class Update:
    """What a detection round did: the track id each detection joined, and the tracks ended."""

    joined: list[int]
    ended: list[TrackEvent]


class Tracker:
    """Tracks of faces, fed detections now and then and carried boxes in between.

    min_iou: overlap for a detection to join a track; max_distance: embedding distance beyond
    which ambiguous boxes never join; reid_distance: distance under which a detection overlapping
    no track joins a lost one; patience: seconds a track lives without detections; embed_every:
    seconds after which a track's face is embedded again.
    """

    def __init__(
        self,
        min_iou: float = 0.3,
        max_distance: float = 0.3,
        reid_distance: float = 0.1,
        patience: float = 1.0,
        embed_every: float = 1.0,
    ) -> None:
        self.min_iou = min_iou
        self.max_distance = max_distance
        self.reid_distance = reid_distance
        self.patience = patience
        self.embed_every = embed_every
        self.tracks: list[Track] = []
        self._next_id = 1

    def carry(self, boxes: dict[int, Box]) -> None:
        """A frame without detection: move the given tracks' boxes; every track shows once more."""
        for track in self.tracks:
            track.box = boxes.get(track.id, track.box)
            track.shown += 1

    def wanted(
        self, time: float, boxes: Sequence[Box], at: dict[int, Box] | None = None
    ) -> list[bool]:
        """Which detections need an embedding: new faces, ambiguous boxes, and faces whose track
        was last embedded ``embed_every`` seconds ago or more (``at`` as for ``update``)."""
        overlap = box_iou(self._boxes(at), np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        candidate = overlap >= self.min_iou
        wanted = []
        for j in range(candidate.shape[1]):
            rows = np.nonzero(candidate[:, j])[0]
            single = len(rows) == 1 and candidate[rows[0]].sum() == 1
            fresh = single and time - self.tracks[rows[0]].embedded < self.embed_every
            wanted.append(not fresh)
        return wanted

    def update(
        self,
        time: float,
        boxes: Sequence[Box],
        embeddings: Sequence[np.ndarray | None],
        votes: Sequence[tuple[str | None, float] | None],
        at: dict[int, Box] | None = None,
    ) -> Update:
        """Feed the detections of the frame at ``time``: box, embedding (or None) and its vote
        (name or None, distance; or None) per face. ``at``: the tracks' boxes on that frame when
        it was detected a few frames ago (default: their boxes now)."""
        found = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        match = associate(
            box_iou(self._boxes(at), found),
            self._distances(embeddings),
            self.min_iou,
            self.max_distance,
            self.reid_distance,
        )
        joined = [0] * len(found)
        for i, j in match.pairs:
            track = self.tracks[i]
            track.box, track.last, track.frames = tuple(found[j]), time, track.shown
            track.misses = -1
            joined[j] = track.id
        for track in self.tracks:
            track.misses += 1
        for j in match.detections:
            track = Track(self._next_id, tuple(found[j]), time, time)
            self._next_id += 1
            self.tracks.append(track)
            joined[j] = track.id
        by_id = {t.id: t for t in self.tracks}
        for j, track_id in enumerate(joined):
            if embeddings[j] is not None:
                track = by_id[track_id]
                track.embeddings.append(np.asarray(embeddings[j], dtype=np.float32))
                track.embedded = time
                if votes[j] is not None:
                    track.votes.append(votes[j])
        ended = [t for t in self.tracks if time - t.last > self.patience]
        self.tracks = [t for t in self.tracks if time - t.last <= self.patience]
        return Update(joined, [t.event() for t in ended])

    def finish(self) -> list[TrackEvent]:
        """End every track (the video is over)."""
        ended = [t.event() for t in self.tracks]
        self.tracks = []
        return ended

    def _boxes(self, at: dict[int, Box] | None = None) -> np.ndarray:
        """T x 4 boxes of the tracks: as given in ``at`` where they are, else as they are now."""
        at = at or {}
        boxes = [at.get(t.id, t.box) for t in self.tracks]
        return np.array(boxes, dtype=np.float64).reshape(-1, 4)

    def _distances(self, embeddings: Sequence[np.ndarray | None]) -> np.ndarray:
        """T x D distances between tracks' mean embeddings and detections' (NaN if unknown)."""
        out = np.full((len(self.tracks), len(embeddings)), np.nan)
        means = [(i, t.embedding()) for i, t in enumerate(self.tracks)]
        means = [(i, m) for i, m in means if m is not None]
        given = [(j, e) for j, e in enumerate(embeddings) if e is not None]
        if means and given:
            diffs = np.stack([m for _, m in means])[:, None] - np.stack([e for _, e in given])
            squared = np.einsum("tjd,tjd->tj", diffs, diffs)
            out[np.ix_([i for i, _ in means], [j for j, _ in given])] = squared
        return out


@dataclass(frozen=True)
class Sighting:
    """Who was seen (None: every unknown face together), first and last time, seconds seen in
    total over their tracks, and how many tracks."""

    name: str | None
    first: float
    last: float
    seconds: float
    tracks: int

    def to_json(self) -> dict:
        """The sighting as one JSON object (seconds rounded to milliseconds)."""
        return {
            "name": self.name,
            "first": round(self.first, 3),
            "last": round(self.last, 3),
            "seconds": round(self.seconds, 3),
            "tracks": self.tracks,
        }


def summarize(events: Sequence[TrackEvent]) -> list[Sighting]:
    """One Sighting per name over ended tracks, by first appearance; unknown faces last."""
    names = {event.name for event in events}
    out = []
    for name in names:
        mine = [e for e in events if e.name == name]
        out.append(
            Sighting(
                name,
                min(e.first for e in mine),
                max(e.last for e in mine),
                sum(e.last - e.first for e in mine),
                len(mine),
            )
        )
    return sorted(out, key=lambda s: (s.name is None, s.first, s.name or ""))

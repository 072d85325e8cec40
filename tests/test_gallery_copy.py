"""Copying galleries between SQLite files and PostgreSQL: everything arrives, checked, resumable."""

import numpy as np
import pytest

from tripletface.cli import main
from tripletface.errors import GalleryError
from tripletface.gallery import open_gallery
from tripletface.gallery.copy import copy_gallery

DIM = 4


def filled(where: str, persons: int = 5) -> None:
    rng = np.random.default_rng(0)
    with open_gallery(where, "toy", "fp-1", DIM) as g:
        for person in range(persons):
            count = 1 + person % 3
            g.add_faces(
                f"p{person}",
                rng.standard_normal((count, DIM)),
                [f"p{person}/{i}.jpg" for i in range(count)],
                [f"hash{person}-{i}" for i in range(count)],
                [(i, 2, 3, 4) if i else None for i in range(count)],
            )
        g.threshold = 0.25
        g.calibration = {"a": 1.0, "b": [2, 3]}


def same(first: str, second: str) -> None:
    with (
        open_gallery(first, None, None, None) as a,
        open_gallery(second, "toy", "fp-1", DIM, create=False) as b,
    ):
        assert a.people() == b.people() and a.threshold == b.threshold
        assert a.calibration == b.calibration
        for name, _ in a.people():
            mine, theirs = a.records_of(name), b.records_of(name)
            np.testing.assert_array_equal(mine[0], theirs[0])
            assert mine[1:] == theirs[1:]


def test_sqlite_to_postgresql_and_back(tmp_path, postgres_url):
    source, back = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    filled(source)
    seen = []
    assert copy_gallery(source, postgres_url, lambda n, total: seen.append((n, total))) == (5, 9, 0)
    assert sum(n for n, _ in seen) == 9 and {total for _, total in seen} == {9}
    same(source, postgres_url)
    assert copy_gallery(postgres_url, back) == (5, 9, 0)
    same(source, back)


def test_an_interrupted_copy_resumes_and_conflicts_are_refused(tmp_path):
    source, target = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    filled(source)
    done = []

    def interrupt(faces, total):
        done.append(faces)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_gallery(source, target, interrupt)
    with open_gallery(target, "toy", "fp-1", DIM) as g:
        assert [name for name, _ in g.people()] == ["p0", "p1"]  # whole persons only
    assert copy_gallery(source, target) == (3, 6, 2)
    same(source, target)
    with open_gallery(target, "toy", "fp-1", DIM) as g:
        g.remove("p4")
        g.add_faces("p4", np.ones((1, DIM)))
    with pytest.raises(GalleryError, match=r"already has 'p4' with 1 faces, the source 2"):
        copy_gallery(source, target)
    with pytest.raises(GalleryError, match="itself"):
        copy_gallery(source, str(tmp_path / "." / "a.db"))


def test_a_destination_of_another_encoder_is_refused(tmp_path, capsys):
    source, other = str(tmp_path / "a.db"), str(tmp_path / "other.db")
    filled(source)
    open_gallery(other, "facenet", "fp-9", DIM).close()
    assert main(["gallery", "copy", source, other]) == 2
    assert "built with encoder facenet" in capsys.readouterr().err
    assert main(["gallery", "copy", source, str(tmp_path / "new.db")]) == 0
    assert "copied 5 people (9 faces)" in capsys.readouterr().out
    assert main(["gallery", "copy", str(tmp_path / "missing.db"), other]) == 2
    assert "no gallery there" in capsys.readouterr().err

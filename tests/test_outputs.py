"""Output folders: made with their parents, refused in one line, and gone again when unused."""

import pytest

from tripletface.errors import InputError
from tripletface.outputs import output_folder, tentative_folder


def test_output_folder_makes_parents_and_accepts_an_existing_folder(tmp_path):
    folder = output_folder(tmp_path / "a" / "b", "--out")
    assert folder.is_dir() and output_folder(folder, "--out") == folder


def test_a_file_in_the_way_is_named_with_the_option(tmp_path):
    (tmp_path / "file").touch()
    with pytest.raises(InputError, match=r"^--plots .*file/sub: cannot write there \("):
        output_folder(tmp_path / "file" / "sub", "--plots")


def test_a_failed_block_removes_only_the_empty_folders_it_made(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError), tentative_folder(tmp_path / "kept/new/run", "--out") as run:
        assert run.is_dir()
        raise ValueError("refused before writing")
    assert not (tmp_path / "kept/new").exists() and (tmp_path / "kept").is_dir()


def test_a_failed_block_keeps_what_it_wrote(tmp_path):
    with pytest.raises(KeyboardInterrupt), tentative_folder(tmp_path / "new/run", "--out") as run:
        (run / "faces.npz").write_bytes(b"cache")
        raise KeyboardInterrupt
    assert (tmp_path / "new/run/faces.npz").read_bytes() == b"cache"


def test_a_block_that_succeeds_keeps_its_empty_folder(tmp_path):
    with tentative_folder(tmp_path / "run", "--out"):
        pass
    assert (tmp_path / "run").is_dir()

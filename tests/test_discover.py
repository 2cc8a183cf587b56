from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tarsier.engine.discover import DEFAULT_EXTENSIONS, discover


def touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


@pytest.fixture()
def tree(tmp_path):
    r = tmp_path / "root"
    for name in ["b.mp4", "a.MOV", "notes.txt", ".hidden.mp4", "sub/c.mkv", "sub/deep/d.webm",
                 ".secret/e.mp4", "sub/f.gif"]:
        touch(r / name)
    return r


def rels(videos):
    return [v.rel for v in videos]


def test_folder_walk_sorted_filtered_hidden_skipped(tree):
    videos, problems = discover([str(tree)])
    assert problems == []
    assert rels(videos) == ["a.MOV", "b.mp4", "sub/c.mkv", "sub/deep/d.webm", "sub/f.gif"]
    assert all(v.path.is_absolute() for v in videos)


def test_not_recursive(tree):
    videos, _ = discover([str(tree)], recursive=False)
    assert rels(videos) == ["a.MOV", "b.mp4"]


def test_explicit_files_any_extension_and_hidden(tree):
    videos, problems = discover([str(tree / "notes.txt"), str(tree / ".hidden.mp4")])
    assert problems == []
    assert sorted(rels(videos)) == [".hidden.mp4", "notes.txt"]


def test_extension_filter_case_insensitive(tree):
    videos, _ = discover([str(tree)], extensions=("MKV", ".mov"))
    assert rels(videos) == ["a.MOV", "sub/c.mkv"]
    assert "mp4" in DEFAULT_EXTENSIONS


def test_glob(tree):
    videos, problems = discover([str(tree / "sub" / "**" / "*")])
    assert problems == []
    assert rels(videos) == ["c.mkv", "deep/d.webm", "f.gif"]
    videos, _ = discover([str(tree / "*")])
    assert rels(videos) == ["a.MOV", "b.mp4"]                      # hidden names skipped
    videos, _ = discover([str(tree / ".secret" / "*.mp4")])         # a pattern under a hidden folder
    assert rels(videos) == ["e.mp4"]
    videos, problems = discover([str(tree / "*.nothing")])
    assert videos == [] and problems and "match" in problems[0][1]


def test_missing_inputs_are_problems(tree):
    videos, problems = discover([str(tree / "nope.mp4"), str(tree)])
    assert len(videos) == 5
    assert problems == [(str(tree / "nope.mp4"), "no such file or folder")]


def test_empty_folder_is_a_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    videos, problems = discover([str(tmp_path / "empty")])
    assert videos == [] and len(problems) == 1


def test_stdin_list(tree):
    text = f"\n  {tree / 'b.mp4'}  \n\n{tree / 'sub'}\n"
    videos, problems = discover(["-"], stdin=io.StringIO(text))
    assert problems == []
    assert rels(videos) == ["b.mp4", "sub/c.mkv", "sub/deep/d.webm", "sub/f.gif"]


def test_same_name_in_two_folders_never_collide(tmp_path):
    a = touch(tmp_path / "a" / "x.mp4")
    b = touch(tmp_path / "b" / "x.mp4")
    videos, _ = discover([str(a), str(b)])
    assert rels(videos) == ["a/x.mp4", "b/x.mp4"]
    videos, _ = discover([str(tmp_path / "a"), str(tmp_path / "b")])
    assert rels(videos) == ["a/x.mp4", "b/x.mp4"]


def test_duplicates_and_symlink_loops(tree):
    os.symlink(tree, tree / "sub" / "loop")            # a loop back to the root
    os.symlink(tree / "b.mp4", tree / "b_link.mp4")    # the same file twice
    videos, problems = discover([str(tree), str(tree / "b.mp4")])
    assert problems == []
    reals = [os.path.realpath(v.path) for v in videos]
    assert len(reals) == len(set(reals)) == 5


def test_broken_symlink(tmp_path):
    os.symlink(tmp_path / "gone.mp4", tmp_path / "link.mp4")
    videos, problems = discover([str(tmp_path / "link.mp4")])
    assert videos == [] and problems[0][1] == "broken symbolic link"


def test_folder_vanishing_mid_walk(tree, monkeypatch):
    import tarsier.engine.discover as d

    real_scandir = os.scandir

    def flaky(path):
        if str(path).endswith("deep"):
            raise FileNotFoundError(path)
        return real_scandir(path)

    monkeypatch.setattr(d.os, "scandir", flaky)
    videos, problems = discover([str(tree)])
    assert "sub/c.mkv" in rels(videos)
    assert len(problems) == 1 and "vanished" in problems[0][1]


def test_several_roots_are_prefixed_by_their_own_name(tmp_path):
    # far apart (their common ancestor is tmp_path/deep/...): each key starts at its own root's name
    one = touch(tmp_path / "deep" / "er" / "videos" / "counter.mp4")
    two = touch(tmp_path / "work" / "clips" / "a" / "x.mp4")
    videos, _ = discover([str(one), str(tmp_path / "work" / "clips")])
    assert rels(videos) == ["videos/counter.mp4", "clips/a/x.mp4"]
    # two roots of one name: one more parent folder each
    three = touch(tmp_path / "other" / "clips" / "x.mp4")
    videos, _ = discover([str(two.parent.parent), str(three.parent)])
    assert rels(videos) == ["work/clips/a/x.mp4", "other/clips/x.mp4"]
    # a root inside another root belongs to it (find /data | describe - keeps the tree)
    videos, _ = discover(["-"], stdin=io.StringIO(f"{one}\n{touch(one.parent / 'sub' / 'y.mp4')}\n"))
    assert rels(videos) == ["counter.mp4", "sub/y.mp4"]

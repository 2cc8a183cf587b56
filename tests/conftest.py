"""Shared fixtures: small generated videos with known cuts (session-scoped, built once) and the
real sample videos in ../shared/videos (skipped cleanly when absent).

Reuse: `make_video(path, segments=[(seconds, colour), ...], fps=..., size=...)` from tests/videogen.py
returns a GenVideo with the true cut times; the `videos` fixture below has ready-made ones.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import videogen

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """The real sample videos (../shared/videos beside the repo)."""
    if not SHARED_VIDEOS.is_dir() or not any(SHARED_VIDEOS.glob("*.mp4")):
        pytest.skip(f"sample videos not found at {SHARED_VIDEOS}")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def videos(video_dir) -> dict:
    """name -> GenVideo (or Path for the broken ones). Built once per test session."""
    d = video_dir
    v: dict = {}
    # cuts at 2.0, 3.5, 6.0; 25 fps; 8 s
    v["cuts"] = videogen.make_video(d / "cuts.mp4", [(2.0, 0), (1.5, 1), (2.5, 2), (2.0, 3)], fps=25)
    # a 0.4 s scene (shorter than min_clip=1.0) between two long ones: cuts at 2.0, 2.4
    v["short_scene"] = videogen.make_video(d / "short_scene.mp4", [(2.0, 0), (0.4, 1), (2.6, 2)], fps=25)
    # one scene of 10 s at 10 fps, to split with max_clip
    v["long"] = videogen.make_video(d / "long.mp4", [(10.0, 4)], fps=10)
    v["vfr"] = videogen.make_vfr_video(d / "vfr.mp4")                      # cuts at 2.0, 4.0
    v["rotated"] = videogen.make_video(d / "rotated.mp4", [(1.0, 0)], fps=10, size=(96, 64), rotation=-90)
    v["hd"] = videogen.make_video(d / "hd.mp4", [(1.0, 0), (1.0, 1)], fps=10, size=(1920, 1080))
    v["single"] = videogen.make_single_frame(d / "single.mp4")
    v["late"] = videogen.make_video(d / "late.mp4", [(1.0, 0), (1.5, 1)], fps=25, start_offset=0.48)
    v["corrupt_mid"] = videogen.make_corrupt_mid(d / "corrupt_mid.mkv")
    v["audio_only"] = videogen.make_audio_only(d / "audio_only.mp4")
    v.update(videogen.make_bad_files(d / "bad", v["cuts"].path))
    return v


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """A small `tarsier synth` world (8 videos, seed 5) that training and tower tests only read."""
    from tarsier.world.build import generate

    out = tmp_path_factory.mktemp("world")
    generate(out, videos=8, seed=5, workers=1)
    return out


@pytest.fixture
def tarsier_home(tmp_path, monkeypatch) -> Path:
    """An empty model cache per test, so nothing leaks into or out of the user's ~/.cache/tarsier."""
    home = tmp_path / "home"
    monkeypatch.setenv("TARSIER_HOME", str(home))
    return home

"""The detectors' faster frame score (engine.scenes._fast_score_class) gives PySceneDetect's numbers."""
from __future__ import annotations

import av
import pytest
from scenedetect.common import FrameTimecode, Timecode
from scenedetect.detectors import AdaptiveDetector, ContentDetector

from tarsier.engine.scenes import make_detector


def bgr_frames(path, width=256):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            h = round(f.height * width / f.width) // 2 * 2
            yield FrameTimecode(Timecode(pts=f.pts, time_base=s.time_base), fps=s.average_rate), \
                f.to_ndarray(width=width, height=h, format="bgr24")


@pytest.mark.parametrize("mode,stock", [("adaptive", AdaptiveDetector), ("content", ContentDetector)])
def test_same_scores_and_cuts_as_pyscenedetect(videos, shared_videos, mode, stock):
    for path in (videos["cuts"].path, videos["vfr"].path, shared_videos / "goldeneye-vfr-drop3.mp4"):
        ours, theirs = make_detector(mode, None, 0.6), stock(min_scene_len=0.6)
        assert type(ours) is not stock   # the fast one is in use
        cuts_ours, cuts_theirs = [], []
        for tc, img in bgr_frames(path):
            cuts_ours += ours.process_frame(tc, img)
            cuts_theirs += theirs.process_frame(tc, img)
            assert ours._frame_score == theirs._frame_score   # bit for bit
        assert [c.seconds for c in cuts_ours] == [c.seconds for c in cuts_theirs]
    assert cuts_theirs, "the sample has cuts: the comparison means something"

"""A warp-guided avatar shows the warp, and runs its network only for an opening mouth."""

from __future__ import annotations

import numpy as np

from vcam.runtime.avatars import AvatarLibrary
from vcam.runtime.frames import Frame
from vcam.runtime.pipeline import RenderWorker
from vcam.warp import lip_gap


def rendered_for(library: AvatarLibrary, points: np.ndarray) -> tuple[np.ndarray, int]:
    """The crop the render stage shows for ``points``, and how often the network ran."""
    calls = []
    render = library.render
    library.render = lambda index, inputs: calls.append(index) or render(index, inputs)
    try:
        worker = RenderWorker(library)
        frame = worker.process(worker.prepare(Frame(0, 0.0, 0.0, avatar_points=points)))
    finally:
        library.render = render
    assert worker.frames_painted == len(calls)  # the run's summary counts what ran
    return frame.rendered, len(calls)


def test_a_closed_mouth_is_the_warp_without_running_the_network(warp_library):
    neutral = warp_library.avatar(0).neutral_landmarks
    shown, runs = rendered_for(warp_library, neutral + 0.5)
    expected = warp_library.warp_guide(0).image_for(neutral + 0.5)
    assert runs == 0 and np.array_equal(shown, expected)


def test_an_opening_mouth_is_painted_inside_and_the_warp_outside(warp_library):
    neutral = warp_library.avatar(0).neutral_landmarks
    wide = np.array(neutral, np.float32)
    wide[[65, 66, 67], 1] += (0.3 - lip_gap(neutral)) * np.linalg.norm(neutral[36] - neutral[45])
    shown, runs = rendered_for(warp_library, wide)
    warped = warp_library.warp_guide(0).image_for(wide)
    assert runs == 1
    assert np.array_equal(shown[:8, :8], warped[:8, :8])  # far from the mouth: the warp
    x, y = np.round(wide[[62, 66]].mean(axis=0)).astype(int)
    assert not np.array_equal(shown[y, x], warped[y, x])  # inside it: the painting

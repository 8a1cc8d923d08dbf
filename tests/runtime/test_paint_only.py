"""A warp-guided avatar shows the warp, and runs its network only for an opening mouth."""

from __future__ import annotations

import numpy as np

from vcam.runtime.avatars import AvatarLibrary
from vcam.runtime.frames import Frame
from vcam.runtime.pipeline import RenderWorker, to_rgb_image
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


def wide_open(points: np.ndarray) -> np.ndarray:
    wide = np.array(points, np.float32)
    wide[[65, 66, 67], 1] += (0.3 - lip_gap(points)) * np.linalg.norm(points[36] - points[45])
    return wide


def network_input_for(library: AvatarLibrary,
                      points: np.ndarray) -> tuple[np.ndarray, np.ndarray, Frame]:
    """The warp the network was given for ``points`` (RGB uint8), what it rendered (RGB
    uint8) and the finished frame."""
    given, rendered = [], []

    def recording(index, inputs):
        given.append(inputs.copy())
        rendered.append(render(index, inputs))
        return rendered[-1]

    render = library.render
    library.render = recording
    try:
        worker = RenderWorker(library)
        frame = worker.process(worker.prepare(Frame(0, 0.0, 0.0, avatar_points=points)))
    finally:
        library.render = render
    assert len(given) == 1
    warp = np.clip(np.round((given[0][0, 3:].transpose(1, 2, 0) + 1) * 127.5), 0, 255)
    return warp.astype(np.uint8), to_rgb_image(rendered[0][0]), frame


def test_a_cavity_avatar_gives_its_network_a_hole_and_shows_the_warp_around_it(
        warp_library, cavity_library):
    points = wide_open(cavity_library.avatar(0).neutral_landmarks)
    x, y = np.round(points[[62, 66]].mean(axis=0)).astype(int)
    guide = cavity_library.warp_guide(0)
    assert guide.cavity and not warp_library.warp_guide(0).cavity
    warped = guide.image_for(points)
    given, painting, frame = network_input_for(cavity_library, points)
    assert np.abs(given.astype(int) - guide.network_image(points, warped)).max() <= 1
    assert given[y, x].mean() < 0.6 * warped[y, x].mean()  # a dark hole where lips stretch
    # The painting is blended over the plain warp, not over the warp with the hole.
    expected = guide.paint(painting, warped, guide.paint_region(points))
    assert np.array_equal(frame.rendered, expected)
    holed_base = guide.paint(painting, given, guide.paint_region(points))
    assert not np.array_equal(frame.rendered, holed_base)
    plain, _, _ = network_input_for(warp_library, points)
    assert np.abs(plain.astype(int) - warp_library.warp_guide(0).image_for(points)).max() <= 1

"""Between two runs of a slow network, a live avatar shows its last painting, warped to the
new face; files run the network on every painted frame."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.conftest import astronaut_library
from vcam.avatar import load_avatar
from vcam.runtime.avatars import AvatarEntry, AvatarLibrary, RendererSettings
from vcam.runtime.frames import Frame
from vcam.runtime.pipeline import RenderWorker, RunSummary, to_rgb_image
from vcam.runtime.reuse import MAX_REUSED_IN_A_ROW, Painting, PaintingReuse
from vcam.warp import lip_gap

FRAME_MS = 1000 / 30


@pytest.fixture(scope="module")
def two_avatar_library(dlib_detector, tmp_path_factory):
    """Two avatars (the astronaut, twice) of a seeded tiny warp-guided model."""
    folder = tmp_path_factory.mktemp("two-avatars")
    astronaut_library(dlib_detector, folder, "warp")  # saves a.avatar.safetensors
    first, second = folder / "a.avatar.safetensors", folder / "b.avatar.safetensors"
    second.write_bytes(first.read_bytes())
    with AvatarLibrary([AvatarEntry(load_avatar(path), path) for path in (first, second)],
                       RendererSettings("torch", threads=1)) as library:
        yield library


def blank_painting(avatar_index: int = 0, media_time: float = 0.0) -> Painting:
    return Painting(np.zeros((8, 8, 3), np.uint8), np.zeros((68, 2)), avatar_index, media_time)


def test_the_network_runs_as_often_as_the_frame_interval_allows():
    assert PaintingReuse(None).network_period() == 1  # a file: every painted frame
    reuse = PaintingReuse(FRAME_MS)
    assert reuse.network_period() == 1  # not timed yet
    reuse.remember(blank_painting(), 12.0)
    assert reuse.network_period() == 1  # fast enough for every frame
    reuse.remember(reuse.last, 55.0)  # a running mean: 0.25 x 55 + 0.75 x 12 = 22.75 ms
    assert reuse.network_ms == pytest.approx(22.75) and reuse.network_period() == 1
    for _ in range(20):
        reuse.remember(reuse.last, 55.0)
    assert reuse.network_period() == 3  # 55 ms against 3/4 of a 33 ms interval
    for _ in range(20):
        reuse.remember(reuse.last, 900.0)
    assert reuse.network_period() == MAX_REUSED_IN_A_ROW + 1  # never a longer run of reuse


def test_a_new_avatar_a_closed_mouth_or_an_old_painting_brings_the_network_back():
    reuse = PaintingReuse(FRAME_MS)
    assert reuse.network_due(0, 0.0)  # nothing to reuse yet
    reuse.remember(blank_painting(media_time=10.0), 900.0)  # period 4: 133 ms
    assert not reuse.network_due(0, 10.1) and reuse.network_due(1, 10.1)
    assert reuse.network_due(0, 10.2)  # older than four frame intervals (a stalled camera)
    reuse.forget()
    assert reuse.network_due(0, 10.0)
    with pytest.raises(RuntimeError):
        reuse.reuse(np.zeros((68, 2)))
    file_reuse = PaintingReuse(None)
    file_reuse.remember(blank_painting(), 900.0)
    assert file_reuse.network_due(0, 0.0)


def test_a_reused_painting_follows_the_face(warp_library):
    avatar = warp_library.avatar(0)
    points = np.asarray(avatar.neutral_landmarks, np.float64)
    image = warp_library.warp_guide(0).image_for(points)
    reuse = PaintingReuse(FRAME_MS)
    reuse.remember(Painting(image, points, 0, 0.0), 900.0)
    same = reuse.reuse(points)
    assert np.abs(same.astype(int) - image).max() <= 2
    moved = reuse.reuse(points + np.array([4.0, 0.0]))
    (x0, y0), (x1, y1) = np.round(np.percentile(points[27:36], [0, 100], axis=0)).astype(int)
    followed = np.abs(moved[y0:y1, x0 + 4:x1 + 4].astype(int) - image[y0:y1, x0:x1]).mean()
    stayed = np.abs(moved[y0:y1, x0:x1].astype(int) - image[y0:y1, x0:x1]).mean()
    assert followed < 0.25 * stayed  # the nose moved 4 px to the right, with the landmarks
    assert reuse.frames_reused == 2 and reuse.reused_in_a_row == 2


def opening_mouths(points: np.ndarray, frames: int) -> list[np.ndarray]:
    """``points`` with the lower inner lip well below the avatar's, moving a little."""
    eyes = np.linalg.norm(points[36] - points[45])
    sequence = []
    for index in range(frames):
        wide = np.array(points, np.float32)
        wide[[65, 66, 67], 1] += (0.25 + 0.01 * index - lip_gap(points)) * eyes
        sequence.append(wide)
    return sequence


def rendered_sequence(library: AvatarLibrary, sequence: list, frame_interval_ms: float | None,
                      monkeypatch) -> tuple[RenderWorker, list, list]:
    """The render stage over ``sequence`` (landmarks, or (landmarks, avatar index)), all at
    one instant: the worker, the frames shown, the network's outputs (None on frames it did
    not run)."""
    outputs: list = []
    render = library.render

    def recording(index, inputs):
        outputs[-1] = render(index, inputs)
        return outputs[-1]

    monkeypatch.setattr(library, "render", recording)
    worker = RenderWorker(library, frame_interval_ms)
    shown = []
    for index, item in enumerate(sequence):
        points, avatar_index = item if isinstance(item, tuple) else (item, 0)
        outputs.append(None)
        frame = Frame(index, 0.0, 0.0, avatar_index=avatar_index, avatar_points=points)
        shown.append(worker.process(worker.prepare(frame)).rendered)
    return worker, shown, outputs


def test_a_live_render_stage_runs_a_slow_network_on_one_painted_frame_in_four(warp_library,
                                                                            monkeypatch):
    neutral = warp_library.avatar(0).neutral_landmarks
    sequence = [*opening_mouths(neutral, 6), np.array(neutral, np.float32),
                *opening_mouths(neutral, 2)]
    worker, shown, outputs = rendered_sequence(warp_library, sequence, 1e-6, monkeypatch)
    ran = [output is not None for output in outputs]
    # four per network run at most; the closed mouth (frame 6) starts the next opening afresh
    assert ran == [True, False, False, False, True, False, False, True, False]
    assert worker.frames_painted == 3 and worker.frames_reused == 5
    guide = warp_library.warp_guide(0)
    painting = to_rgb_image(outputs[0][0])
    expected = PaintingReuse(None)
    expected.remember(Painting(painting, sequence[0], 0, 0.0), 1.0)
    reused = expected.reuse(sequence[1])
    assert np.array_equal(shown[1], guide.paint(reused, guide.image_for(sequence[1]),
                                                guide.paint_region(sequence[1])))
    assert np.array_equal(shown[6], guide.image_for(sequence[6]))  # closed: the warp


def test_a_file_runs_the_network_on_every_painted_frame(warp_library, monkeypatch):
    sequence = opening_mouths(warp_library.avatar(0).neutral_landmarks, 4)
    worker, _, outputs = rendered_sequence(warp_library, sequence, None, monkeypatch)
    assert all(output is not None for output in outputs)
    assert worker.frames_painted == 4 and worker.frames_reused == 0


def test_a_lost_face_or_another_avatar_brings_the_network_back(two_avatar_library, monkeypatch):
    opening = opening_mouths(two_avatar_library.avatar(0).neutral_landmarks, 6)
    sequence = [opening[0], opening[1], None, opening[2], opening[3],
                (opening_mouths(two_avatar_library.avatar(1).neutral_landmarks, 1)[0], 1),
                opening[4]]
    worker, shown, outputs = rendered_sequence(two_avatar_library, sequence, 1e-6, monkeypatch)
    # the face lost (frame 2) and the switches to avatar 1 (frame 5) and back each restart it
    assert [output is not None for output in outputs] == [True, False, False, True, False,
                                                          True, True]
    assert shown[2] is None and worker.frames_reused == 2


def test_live_inputs_reuse_paintings_and_files_do_not(warp_library, astronaut_image, tmp_path):
    from vcam.bench.pipeline import ReplaySource
    from vcam.data.synthetic import write_video
    from vcam.runtime.capture import VideoFileSource
    from vcam.runtime.file_sink import FileSink
    from vcam.runtime.pipeline import OUTPUT_PATIENCE, Pipeline, PipelineSettings

    clip = tmp_path / "clip.mp4"
    write_video(str(clip), iter([astronaut_image[:240, :320]] * 3), fps=25.0)
    sink = FileSink(tmp_path / "out.mp4", 320, 240, 25.0)
    live = Pipeline(ReplaySource([], 25.0), warp_library, [sink], PipelineSettings(fps=25.0))
    assert live.renderer.paintings.frame_interval_ms == pytest.approx(40.0)
    assert live.handoffs["render->output"].patience_s == pytest.approx(OUTPUT_PATIENCE / 25)
    assert live.handoffs["landmarks->render"].patience_s == 0
    from_file = Pipeline(VideoFileSource(clip), warp_library, [sink],
                         PipelineSettings(fps=25.0))
    assert from_file.renderer.paintings.frame_interval_ms is None
    assert all(handoff.wait_for_consumer for handoff in from_file.handoffs.values())


def test_the_run_summary_says_how_many_frames_reused_a_painting():
    summary = RunSummary("end of input", 10, 10, 10, 0, {}, 1.0, 10.0, 40.0, 60.0, {},
                         frames_painted=3, frames_reused=5)
    assert "(3 painted by the network, 5 more with its last painting warped)" in summary.lines()[1]
    file_run = RunSummary("end of input", 10, 10, 10, 0, {}, 1.0, 10.0, 40.0, 60.0, {},
                          frames_painted=3)
    assert "(3 painted by the network)," in file_run.lines()[1]

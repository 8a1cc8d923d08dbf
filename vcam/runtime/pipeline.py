"""The real-time loop: capture -> landmarks -> render -> output, each stage in its own thread.

Stages are joined by one-slot :class:`~vcam.runtime.handoff.Handoff` s: for a live input
the newest frame wins (a slow stage drops stale frames and never builds a backlog); for a
file every hand-off waits for its consumer, so every input frame is rendered. Each packet
carries its capture time; stage times, frames/s, latency and drops are measured throughout,
shown on the preview and logged.

The main thread runs the preview window's event loop (or just waits), so Ctrl-C lands there:
the stop event is set, every hand-off closed, every thread joined, then the sinks and the
source are released by their context managers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

import numpy as np

from vcam.landmarks.raster import rasterise
from vcam.landmarks.tracker import FaceTracker
from vcam.runtime.avatars import AvatarLibrary
from vcam.runtime.capture import FrameSource
from vcam.runtime.compositor import Compositor, CompositorSettings
from vcam.runtime.controls import Command, Controls, SelectAvatar
from vcam.runtime.face_loss import FaceAbsence, FaceLossPolicy, FaceLossSettings
from vcam.runtime.frames import Frame, FrameKind
from vcam.runtime.handoff import Handoff, HandoffClosed
from vcam.runtime.retarget import Retargeter, RetargetSettings
from vcam.runtime.reuse import Painting, PaintingReuse
from vcam.runtime.sinks import Sink, WindowSink
from vcam.runtime.stats import PipelineStats, StageStats, StatsSnapshot, percentile

logger = logging.getLogger("vcam.runtime")

# A steady sink (the virtual camera) gets the last frame again after this many frame
# intervals without a new one, and two new frames of a live input no closer than this part
# of an interval; the render stage waits up to OUTPUT_PATIENCE of one for the output stage.
REPEAT_AFTER = 1.5
MIN_GAP = 0.5
OUTPUT_PATIENCE = 0.75


@dataclass(frozen=True)
class PipelineSettings:
    """How the loop runs.

    Attributes:
        fps: the rate declared to a virtual camera and written by the file sink; a live
            input's frames reach the virtual camera as they come (at most twice this), a
            file's at this rate.
        max_frames: stop after capturing this many frames (0: no limit).
        lossless: every hand-off waits for its consumer; None: only for inputs that are not
            live (files).
        retarget, face_loss, compositor: the stages' own settings.
        poll_seconds: how often idle threads look at the stop event.
        log_every: seconds between stats lines in the log (0: never).
        overlay_refresh: seconds between refreshes of the figures handed to the sinks.
    """

    fps: float = 30.0
    max_frames: int = 0
    lossless: bool | None = None
    retarget: RetargetSettings = field(default_factory=RetargetSettings)
    face_loss: FaceLossSettings = field(default_factory=FaceLossSettings)
    compositor: CompositorSettings = field(default_factory=CompositorSettings)
    poll_seconds: float = 0.05
    log_every: float = 5.0
    overlay_refresh: float = 0.25

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.max_frames < 0 or self.poll_seconds <= 0:
            raise ValueError("need fps > 0, max_frames >= 0 and poll_seconds > 0")


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for the command's report and for tests.

    ``face_states`` counts the frames output per face state (tracking, holding, easing,
    neutral) and the "camera lost" cards; ``frames_by_avatar`` the frames of each avatar;
    ``frames_painted`` the frames rendered on which the generator network ran (a warp-guided
    avatar runs it only where the mouth opens beyond its source: the rest show the warp);
    ``frames_reused`` the painted frames of a live input that showed the network's last
    painting, warped, because the network is slower than the input's frames.
    """

    reason: str
    frames_captured: int
    frames_rendered: int
    frames_output: int
    dropped: int
    dropped_by_handoff: dict[str, int]
    seconds: float
    fps: float
    latency_median_ms: float
    latency_p95_ms: float
    stage_ms: dict[str, float]
    face_states: dict[str, int] = field(default_factory=dict)
    frames_by_avatar: dict[str, int] = field(default_factory=dict)
    frames_painted: int = 0
    frames_reused: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        stages = ", ".join(f"{name} {ms:.1f}" for name, ms in self.stage_ms.items())
        reused = (f", {self.frames_reused} more with its last painting warped"
                  if self.frames_reused else "")
        return [f"stopped: {self.reason}",
                f"frames: {self.frames_captured} captured, {self.frames_rendered} rendered "
                f"({self.frames_painted} painted by the network{reused}), "
                f"{self.frames_output} output, {self.dropped} dropped",
                f"{self.fps:.1f} frames/s; capture-to-sink latency {self.latency_median_ms:.0f} "
                f"ms median, {self.latency_p95_ms:.0f} ms p95",
                f"median ms per frame: {stages}"]


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class LandmarkWorker:
    """Driver landmarks (tracked, or given by the demo) -> the avatar's landmarks."""

    def __init__(self, tracker: FaceTracker | None, library: AvatarLibrary,
                 settings: PipelineSettings, controls: Controls,
                 driver_neutral: np.ndarray | None = None) -> None:
        self.tracker = tracker
        self.library = library
        self.controls = controls
        self.avatar_index = 0
        first = library.avatar(0)
        self.retargeter = Retargeter(first.neutral_landmarks, library.crop_size(0),
                                     settings.retarget, driver_neutral)
        self.face_loss = FaceLossPolicy(first.neutral_landmarks, settings.face_loss)
        self.face_absence = FaceAbsence(logger.warning)

    def process(self, frame: Frame) -> Frame:
        self._apply_commands()
        frame.avatar_index = self.avatar_index
        if frame.kind is FrameKind.CAMERA_LOST:
            self._forget_face()
            return frame
        if frame.driver_points is None and frame.image is not None and self.tracker is not None:
            face = self.tracker.update(frame.image, frame.media_time)
            frame.driver_points = None if face is None else face.points
            self.face_absence.note(face is not None, frame.media_time)
        retargeted = (None if frame.driver_points is None
                      else self.retargeter(frame.driver_points, frame.media_time))
        frame.avatar_points, frame.face_state = self.face_loss.update(retargeted,
                                                                      frame.media_time)
        return frame

    def _forget_face(self) -> None:
        if self.tracker is not None:
            self.tracker.reset()
        self.face_loss.reset()

    def _apply_commands(self) -> None:
        for command in self.controls.landmark_commands():
            if command is Command.RESET_NEUTRAL:
                self.retargeter.reset_neutral()
            elif isinstance(command, SelectAvatar):
                self._select(command.index)

    def _select(self, index: int) -> None:
        neutral = self.library.avatar(index).neutral_landmarks
        self.avatar_index = index
        self.retargeter.set_avatar(neutral, self.library.crop_size(index))
        self.face_loss.set_neutral(neutral)
        self.face_loss.reset()
        logger.info("avatar: %s", self.library.names[index])


class RenderWorker:
    """The avatar's landmarks -> the generator's input -> the generator's RGB crop.

    :meth:`prepare` (run in the landmark stage) draws the landmark image and, for the
    warp-guided generator, warps the enrollment frame: the render stage is left with the
    network alone, its slowest part. Where the network is slower than the live input's
    frames, it runs on one painted frame in a few and the frames between show its last
    painting, warped (:mod:`vcam.runtime.reuse`); ``frame_interval_ms`` is None for a file,
    where it runs on every one.
    """

    def __init__(self, library: AvatarLibrary, frame_interval_ms: float | None = None) -> None:
        self.library = library
        self._landmark_images: dict[int, np.ndarray] = {}
        self.frames_painted = 0  # frames on which the network ran
        self.paintings = PaintingReuse(frame_interval_ms)

    def prepare(self, frame: Frame) -> Frame:
        """What the render stage needs: for the warp-guided generator the warped enrollment
        (``frame.warped``) and where to paint (``frame.paint``); and, when the network is to
        run, ``frame.network_input``: (1, C, S, S) float32 in [-1, 1], a new array per frame
        (the render stage may still be using the previous one). A warp-guided avatar runs
        its network only where the warp cannot be right (the inside of a mouth opening
        beyond its source); elsewhere the warp is what it shows."""
        if frame.avatar_points is None:
            return frame
        guide = self.library.warp_guide(frame.avatar_index)
        if guide is not None:
            frame.warped = guide.image_for(frame.avatar_points)
            frame.paint = guide.paint_region(frame.avatar_points)
            if frame.paint is None:
                return frame
        network_warp = None if guide is None else guide.network_image(frame.avatar_points,
                                                                      frame.warped)
        frame.network_input = self.network_input(frame, network_warp)
        return frame

    def network_input(self, frame: Frame, warped: np.ndarray | None) -> np.ndarray:
        """The landmark image (and the warped enrollment) as the generator's input."""
        size = self.library.crop_size(frame.avatar_index)
        if size not in self._landmark_images:
            self._landmark_images[size] = np.zeros((size, size, 3), np.uint8)
        landmark_image = self._landmark_images[size]
        network_input = np.empty((1, 3 if warped is None else 6, size, size), np.float32)
        rasterise(frame.avatar_points, size, out=landmark_image)
        np.multiply(landmark_image.transpose(2, 0, 1), 1 / 127.5, out=network_input[0, :3])
        if warped is not None:
            np.multiply(warped.transpose(2, 0, 1), 1 / 127.5, out=network_input[0, 3:])
        network_input -= 1.0
        return network_input

    def process(self, frame: Frame) -> Frame:
        """The frame :meth:`prepare` made ready, rendered: the network's output (painted into
        the warp for a warp-guided avatar), or the warp alone where there is nothing to
        paint."""
        if frame.avatar_points is None:
            self.paintings.forget()
            return frame
        if frame.network_input is None:  # nothing to paint: the warp
            self.paintings.forget()
            frame.rendered = frame.warped
        else:
            rendered = self.painting(frame)
            frame.rendered = rendered if frame.warped is None else self.library.warp_guide(
                frame.avatar_index).paint(rendered, frame.warped, frame.paint)
        frame.network_input = frame.warped = frame.paint = None
        return frame

    def painting(self, frame: Frame) -> np.ndarray:
        """The network's RGB crop for ``frame``, or its last one warped to the frame's face."""
        if not self.paintings.network_due(frame.avatar_index, frame.media_time):
            return self.paintings.reuse(frame.avatar_points)
        started = time.perf_counter()
        rendered = to_rgb_image(self.library.render(frame.avatar_index, frame.network_input)[0])
        self.frames_painted += 1
        self.paintings.remember(Painting(rendered, frame.avatar_points, frame.avatar_index,
                                     frame.media_time), elapsed_ms(started))
        return rendered

    @property
    def frames_reused(self) -> int:
        """Painted frames that showed the network's last painting, warped."""
        return self.paintings.frames_reused


def to_rgb_image(frame: np.ndarray) -> np.ndarray:
    """(3, S, S) float in [-1, 1] -> (S, S, 3) RGB uint8."""
    scaled = (frame.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5
    return np.clip(scaled, 0, 255).astype(np.uint8)


class Pipeline:
    """One run of the real-time loop over a source, a set of avatars and some sinks."""

    def __init__(self, source: FrameSource, library: AvatarLibrary, sinks: list[Sink],
                 settings: PipelineSettings = PipelineSettings(),
                 tracker: FaceTracker | None = None, controls: Controls | None = None,
                 driver_neutral: np.ndarray | None = None) -> None:
        """``library`` must already be entered (backends loaded); ``source`` and ``sinks``
        are opened by :meth:`run` (or by the caller, for :meth:`run_opened`).
        ``driver_neutral`` fixes the driver's neutral face (the demo input)."""
        if not sinks:
            raise ValueError("a pipeline needs at least one sink")
        self.source = source
        self.sinks = sinks
        self.settings = settings
        self.controls = controls or Controls(len(library))
        lossless = (not source.live) if settings.lossless is None else settings.lossless
        self._lossless = lossless
        # After the network ran, the frame that waited for it follows at once: the output
        # stage gets up to OUTPUT_PATIENCE of a frame interval to take the first before it is
        # replaced (more than the MIN_GAP it may wait between two frames).
        self.handoffs: dict[str, Handoff[Frame]] = {
            "capture->landmarks": Handoff("capture->landmarks", wait_for_consumer=lossless),
            "landmarks->render": Handoff("landmarks->render", wait_for_consumer=lossless),
            "render->output": Handoff("render->output", wait_for_consumer=lossless,
                                      patience_s=OUTPUT_PATIENCE / settings.fps)}
        self.stats = PipelineStats(dropped_counter=self.dropped)
        self.landmarks = LandmarkWorker(tracker, library, settings, self.controls,
                                        driver_neutral)
        self.renderer = RenderWorker(library, None if lossless else 1000 / settings.fps)
        self.compositor = Compositor(settings.compositor,
                                     [library.avatar(index) for index in range(len(library))])
        self.face_states: Counter[str] = Counter()
        self.frames_by_avatar: Counter[str] = Counter()
        self._avatar_names = library.names
        self.frames_captured = 0
        self._first_capture: float | None = None
        self._reason = "stopped"
        self._errors: list[BaseException] = []
        self._output_done = threading.Event()
        self._snapshot = StatsSnapshot(0.0, 0.0, 0.0, {}, 0, 0)
        self._snapshot_time = 0.0
        self._logged_at = 0.0

    def dropped(self) -> int:
        return sum(handoff.dropped for handoff in self.handoffs.values())

    @property
    def stop(self) -> threading.Event:
        return self.controls.stop

    # -- running ------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Open the source and the sinks, run until the input ends, the frame limit, a quit
        key, an error or Ctrl-C, and release them."""
        with ExitStack() as devices:
            devices.enter_context(self.source)
            for sink in self.sinks:
                devices.enter_context(sink)
            return self.run_opened()

    def run_opened(self) -> RunSummary:
        """:meth:`run` for a source and sinks the caller has opened (and will release)."""
        started = time.perf_counter()
        threads = self._start_threads()
        try:
            self._wait_in_main_thread()
        except KeyboardInterrupt:
            self._reason = "interrupted (Ctrl-C)"
        finally:
            self._shut_down(threads)
        if self._errors:
            raise self._errors[0]
        return self._summary(time.perf_counter() - started)

    def _start_threads(self) -> list[threading.Thread]:
        to_landmarks, to_render, to_output = self.handoffs.values()
        jobs: list[tuple[str, Callable[[], None]]] = [
            ("capture", self._capture_loop),
            ("landmarks", lambda: self._stage_loop(to_landmarks, to_render,
                                                   self._landmarks_and_input,
                                                   self.stats.stages["landmarks"])),
            ("render", lambda: self._stage_loop(to_render, to_output, self.renderer.process,
                                                self.stats.stages["render"])),
            ("output", self._output_loop),
        ]
        threads = [threading.Thread(target=self._guarded, args=(job,), name=f"vcam-{name}",
                                    daemon=True) for name, job in jobs]
        for thread in threads:
            thread.start()
        return threads

    def _landmarks_and_input(self, frame: Frame) -> Frame:
        return self.renderer.prepare(self.landmarks.process(frame))

    def _guarded(self, job: Callable[[], None]) -> None:
        """Run a stage; an exception stops the whole pipeline and is re-raised by run()."""
        try:
            job()
        except BaseException as error:  # handed to the main thread by run()
            self._errors.append(error)
            self._reason = f"error: {error}"
            self.stop.set()

    def _wait_in_main_thread(self) -> None:
        windows = [sink for sink in self.sinks if isinstance(sink, WindowSink)]
        while not self._output_done.is_set() and not self.stop.is_set():
            if windows:
                for window in windows:
                    window.pump(self.settings.poll_seconds / len(windows))
            else:
                self._output_done.wait(self.settings.poll_seconds)
        if self.controls.quit_requested:
            self._reason = "quit from the preview"

    def _shut_down(self, threads: list[threading.Thread]) -> None:
        self.stop.set()
        for handoff in self.handoffs.values():
            handoff.close()
        for thread in threads:
            thread.join()

    # -- stages -------------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        outbox = self.handoffs["capture->landmarks"]
        stats = self.stats.stages["capture"]
        limit = self.settings.max_frames
        index = 0
        try:
            requested = time.perf_counter()
            for item in self.source.frames(self.stop):
                kind = FrameKind.CAMERA_LOST if item.lost else FrameKind.VIDEO
                now = time.perf_counter()
                media_time = now if item.timestamp is None else item.timestamp
                frame = Frame(index, now, media_time, kind, item.image, item.points)
                if self._first_capture is None:
                    self._first_capture = frame.captured_at
                if kind is FrameKind.VIDEO:
                    stats.record(elapsed_ms(requested))
                    self.frames_captured += 1
                if not outbox.put(frame):
                    return
                index += 1
                if limit and self.frames_captured >= limit:
                    self._reason = f"frame limit ({limit})"
                    return
                requested = time.perf_counter()
            if not self.stop.is_set():
                self._reason = "end of input"
        finally:
            outbox.close()

    def _stage_loop(self, inbox: Handoff[Frame], outbox: Handoff[Frame],
                    process: Callable[[Frame], Frame], stats: StageStats) -> None:
        try:
            while not self.stop.is_set():
                frame = inbox.get(self.settings.poll_seconds)
                if frame is None:
                    continue
                started = time.perf_counter()
                result = process(frame)
                if frame.kind is FrameKind.VIDEO:
                    stats.record(elapsed_ms(started))
                if not outbox.put(result):
                    return
        except HandoffClosed:
            return
        finally:
            outbox.close()

    def _output_loop(self) -> None:
        """Compose and send each new frame as it comes. Steady sinks (the virtual camera) also
        get the last frame again when nothing new came for :data:`REPEAT_AFTER` frame
        intervals; two new frames go out no closer than :data:`MIN_GAP` of an interval (the
        newest wins), or a whole interval for a file, which would otherwise play as fast as
        it renders. Live frames go out as they arrive, not on a clock of the output's own:
        such a clock has a phase of its own, and every arrival that jittered across one of
        its ticks cost a dropped frame and a repeated one (9-16 of 200 frames of a talking
        face)."""
        inbox = self.handoffs["render->output"]
        steady = [sink for sink in self.sinks if sink.steady]
        interval = 1.0 / self.settings.fps
        gap = (1.0 if self._lossless else MIN_GAP) * interval
        last: tuple[np.ndarray, Frame] | None = None
        new_at = sent_at = 0.0  # when the last new frame, and the last of any, went out
        try:
            while not self.stop.is_set():
                wait = self.settings.poll_seconds
                if steady and last is not None:
                    pause = new_at + gap - time.perf_counter()
                    if pause > 0 and self.stop.wait(pause):
                        break
                    wait = max(0.0, sent_at + REPEAT_AFTER * interval - time.perf_counter())
                frame = inbox.get(wait)
                if frame is not None:
                    last = (self._deliver(frame), frame)
                    new_at = sent_at = time.perf_counter()
                elif steady and last is not None:
                    for sink in steady:
                        sink.send(last[0], last[1], self._snapshot)
                    sent_at = time.perf_counter()
                self._log_now_and_then()
        except HandoffClosed:
            return
        finally:
            self._output_done.set()

    def _deliver(self, frame: Frame) -> np.ndarray:
        started = time.perf_counter()
        canvas = self.compositor.compose(frame)
        snapshot = self._current_snapshot(started)
        for sink in self.sinks:
            sink.send(canvas, frame, snapshot)
        if frame.kind is FrameKind.VIDEO:
            self.stats.stages["output"].record(elapsed_ms(started))
            self.stats.output.record(frame.captured_at, time.perf_counter())
            self.face_states[frame.face_state.value] += 1
            self.frames_by_avatar[self._avatar_names[frame.avatar_index]] += 1
        else:
            self.face_states[FrameKind.CAMERA_LOST.value] += 1
        return canvas

    def _current_snapshot(self, now: float) -> StatsSnapshot:
        if now - self._snapshot_time >= self.settings.overlay_refresh:
            self._snapshot, self._snapshot_time = self.stats.snapshot(), now
        return self._snapshot

    def _log_now_and_then(self) -> None:
        now = time.perf_counter()
        if self.settings.log_every and now - self._logged_at >= self.settings.log_every:
            if self._logged_at:
                logger.info(self.stats.snapshot().line())
            self._logged_at = now

    # -- results ------------------------------------------------------------------------------

    def _summary(self, seconds: float) -> RunSummary:
        output = self.stats.output
        latencies = list(output.latencies_ms)
        span = (output.last - self._first_capture
                if output.last is not None and self._first_capture is not None else seconds)
        return RunSummary(
            reason=self._reason,
            frames_captured=self.frames_captured,
            frames_rendered=self.stats.stages["render"].frames,
            frames_output=output.frames,
            dropped=self.dropped(),
            dropped_by_handoff={name: h.dropped for name, h in self.handoffs.items()},
            seconds=seconds,
            fps=output.frames / span if span > 0 else 0.0,
            latency_median_ms=percentile(latencies, 0.5),
            latency_p95_ms=percentile(latencies, 0.95),
            stage_ms={name: stage.run_median() for name, stage in self.stats.stages.items()},
            face_states=dict(self.face_states),
            frames_by_avatar=dict(self.frames_by_avatar),
            frames_painted=self.renderer.frames_painted,
            frames_reused=self.renderer.frames_reused,
        )

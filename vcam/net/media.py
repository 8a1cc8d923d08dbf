"""Both ends of a call's media, built from the real-time runtime's stages (``vcam.runtime``).

Sending (:class:`CapturedLandmarks`): the runtime's inputs (a camera, a video file played in
real time, or the ``demo`` animation, which needs no camera) and its landmark stage (face
tracker, retargeting onto one's own avatar, the face-loss policy), exactly as `vcam run`
drives an avatar; what would be rendered locally is sent instead: the avatar's landmarks, in
its crop pixels, once per frame.

Receiving (:class:`PipelineRenderer`): the runtime's :class:`~vcam.runtime.pipeline.Pipeline`
fed with the landmarks the call plays out: retarget (onto the peer's avatar, whose own face
the landmarks are already on, so it only keeps the head inside the crop), rasterise, render
with the backend chosen as for `vcam run`, composite, and the sinks (virtual camera, preview
window, mp4 file). It runs in a thread of its own, which also opens the sinks; the preview
window's own calls go to the display it is given (the command line's hands them to the main
thread: :class:`~vcam.runtime.sinks.MainThreadDisplay`). Landmarks that cannot be retargeted
(non-finite, far outside the crop, collapsed) are dropped and counted as ``rejected``, so
nothing the peer sends can stop the pipeline. Two things differ from `vcam run`: torch's
process-wide thread count is never changed (``--threads`` goes to ONNX Runtime only), and an
avatar received for this call only is compiled into a temporary folder that is removed when
the call ends, so nothing made from it stays in the user's data folder or caches.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.backend import Backend, BackendOptions, BackendRegistry, GeneratorSource
from engines.backend import default_registry as default_backends
from vcam.avatar import Avatar
from vcam.errors import UserError
from vcam.landmarks.detector import LandmarkDetector, create_detector
from vcam.landmarks.tracker import FaceTracker
from vcam.net.control import MAX_FPS, MIN_FPS
from vcam.net.jitter import monotonic_us
from vcam.net.playout import PeerAvatar, RendererStop
from vcam.net.recording import CallRecording
from vcam.net.send import LandmarkSample
from vcam.runtime.avatars import AvatarEntry, AvatarLibrary, RendererSettings
from vcam.runtime.capture import DEFAULT_FPS, Captured, FrameSource
from vcam.runtime.compositor import Compositor, CompositorSettings
from vcam.runtime.controls import Controls
from vcam.runtime.file_sink import FileSink
from vcam.runtime.frames import Frame, FrameKind
from vcam.runtime.handoff import Handoff, HandoffClosed
from vcam.runtime.pipeline import LandmarkWorker, Pipeline, PipelineSettings, RunSummary
from vcam.runtime.retarget import RetargetSettings, can_drive
from vcam.runtime.session import InputSpec, SinkOptions, frame_source, output_sinks
from vcam.runtime.sinks import Display, Sink, SinkSpec

POLL_SECONDS = 0.05
# How long closing waits for the render thread (it may be exporting the generator), and
# after how long it says that it waits.
CLOSE_TIMEOUT_S = 120.0
CLOSE_NOTICE_S = 1.0
# Temporary folders of avatars compiled for one call: PREFIX + the process id + a random part.
COMPILED_PREFIX = "vcam-call-compiled-"
# The pipeline's hand-offs before the render stage.
BEFORE_RENDER = ("capture->landmarks", "landmarks->render")


# ---------------------------------------------------------------------------------------
# Sending: capture -> landmarks (track, retarget, face loss) -> the call


@dataclass(frozen=True)
class SendSettings:
    """How one's own landmarks are made: frame rate of a camera or the demo (None: 30; a
    video file plays at its own), looping a file, the landmark detector, retargeting."""

    fps: float | None = None
    loop: bool = False
    landmarks: str = "dlib"
    retarget: RetargetSettings = field(default_factory=RetargetSettings)

    def __post_init__(self) -> None:
        if self.fps is not None and not MIN_FPS <= self.fps <= MAX_FPS:
            raise UserError(f"--fps {self.fps:g}: a call runs at {MIN_FPS:g} to "
                            f"{MAX_FPS:g} frames/s")


def check_detector(name: str) -> None:
    """What the landmark detector ``name`` needs on disk, checked now (cheap: a missing model
    file is a ``UserError`` before the call connects); loading it is left to the
    background."""
    from vcam.landmarks.dlib_backend import SHAPE_PREDICTOR
    from vcam.landmarks.models import model_file

    model_file(SHAPE_PREDICTOR)  # both detectors find faces with dlib
    if name != "face-alignment":
        return
    try:
        from vcam.landmarks.fan_backend import fan_weights_path

        weights = fan_weights_path()
    except ImportError:
        raise UserError("--landmarks face-alignment needs the face-alignment package: "
                        "`pip install face-alignment`, or use --landmarks dlib") from None
    model_file("mmod_human_face_detector.dat")
    if not weights.is_file():
        create_detector(name)  # its UserError names the missing weights (before any load)


class CapturedLandmarks:
    """One's own avatar's landmarks from the runtime's capture and landmark stages: a
    ``LandmarkSource`` for the call. The detector's files are checked and the input is opened
    at once (a missing camera, an unreadable file, a file at a rate a call cannot carry or a
    missing model file is a ``UserError`` here, before the call connects); the landmark
    detector (not needed by the demo) loads in the background while the call connects.
    ``samples`` blocks: it runs in the call's sender thread."""

    def __init__(self, spec: InputSpec, avatar: Avatar, settings: SendSettings = SendSettings(),
                 detector: LandmarkDetector | None = None) -> None:
        self.spec = spec
        self.avatar = avatar
        self.settings = settings
        if detector is None and spec.kind != "demo":
            check_detector(settings.landmarks)
        self.capture: FrameSource = frame_source(spec, settings.fps or DEFAULT_FPS, avatar)
        self.capture.__enter__()
        try:
            self.fps = self.frame_rate()
        except BaseException:
            self.close()
            raise
        self.detector = detector
        self.detector_error: Exception | None = None
        self.detector_ready = threading.Event()
        if detector is not None or spec.kind == "demo":
            self.detector_ready.set()
        else:
            threading.Thread(target=self.load_detector, name="vcam-call-detector",
                             daemon=True).start()

    def frame_rate(self) -> float:
        """A file's own rate (``UserError`` unless a call can carry it), else ``--fps`` or
        30."""
        if self.spec.kind != "file":
            return float(self.settings.fps or DEFAULT_FPS)
        fps = float(self.capture.fps)
        if not MIN_FPS <= fps <= MAX_FPS:
            raise UserError(f"--input {self.spec.path} plays at {fps:g} frames/s and a call "
                            f"carries {MIN_FPS:g} to {MAX_FPS:g}: convert it first (e.g. "
                            "`ffmpeg -i IN -r 30 OUT.mp4`)")
        return fps

    def load_detector(self) -> None:
        try:
            self.detector = create_detector(self.settings.landmarks, "cpu")
        except Exception as error:  # raised by samples(), which ends the call with it
            self.detector_error = error
        finally:
            self.detector_ready.set()

    def tracker(self, stop: threading.Event) -> FaceTracker | None:
        """A face tracker once the detector is loaded (None for the demo, or when ``stop``
        came first)."""
        while not self.detector_ready.wait(0.1):
            if stop.is_set():
                return None
        if self.detector_error is not None:
            raise self.detector_error
        return None if self.detector is None else FaceTracker(self.detector)

    def landmark_stage(self, tracker: FaceTracker | None) -> LandmarkWorker:
        """The runtime's landmark stage driving one's own avatar (its library is never
        entered: no generator is loaded on the sending side)."""
        library = AvatarLibrary([AvatarEntry(self.avatar)])
        settings = PipelineSettings(fps=self.fps, retarget=self.settings.retarget)
        driver_neutral = self.avatar.neutral_landmarks if self.spec.kind == "demo" else None
        return LandmarkWorker(tracker, library, settings, Controls(1), driver_neutral)

    def samples(self, stop: threading.Event) -> Iterator[LandmarkSample]:
        tracker = self.tracker(stop)
        if tracker is None and self.spec.kind != "demo":
            return
        stage = self.landmark_stage(tracker)
        started, index = time.perf_counter(), 0
        while True:
            first_of_pass = index
            for item in self.capture.frames(stop):
                if not self.capture.live and self.wait_until_due(stop, started + index / self.fps):
                    return
                sample = self.process(stage, item, index, started)
                index += 1
                if sample is not None:
                    yield sample
            looping = self.settings.loop and self.spec.kind == "file"
            if stop.is_set() or not looping or index == first_of_pass:
                return  # (a pass without a frame would loop for ever)
            self.rewind(tracker)

    @staticmethod
    def wait_until_due(stop: threading.Event, due: float) -> bool:
        """Wait for a file's frame time (it plays in real time); True if ``stop`` came."""
        return stop.wait(max(0.0, due - time.perf_counter()))

    def process(self, stage: LandmarkWorker, item: Captured, index: int, started: float
                ) -> LandmarkSample | None:
        captured_us, now = monotonic_us(), time.perf_counter()
        media_time = now if self.capture.live else started + index / self.fps
        kind = FrameKind.CAMERA_LOST if item.lost else FrameKind.VIDEO
        frame = stage.process(Frame(index, now, media_time, kind, item.image, item.points))
        if frame.kind is FrameKind.CAMERA_LOST or frame.avatar_points is None:
            return None
        return LandmarkSample(np.asarray(frame.avatar_points, np.float32), captured_us)

    def rewind(self, tracker: FaceTracker | None) -> None:
        """Start a looping file again (its timeline goes on: smoothing never sees time go
        back)."""
        self.capture.__exit__(None, None, None)
        self.capture.__enter__()
        if tracker is not None:
            tracker.reset()

    def close(self) -> None:
        self.capture.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------
# Receiving: the call's playout -> the runtime's pipeline -> sinks


@dataclass(frozen=True)
class ReceiveSettings:
    """How the peer is shown: the sinks (in order), the renderer (backend, threads, device),
    the canvas (size, background, mirror) and the virtual camera to use (``virtualcam_backend``:
    a pyvirtualcam backend name; None tries every one installed)."""

    sinks: tuple[SinkSpec, ...] = (SinkSpec("window"),)
    renderer: RendererSettings = field(
        default_factory=lambda: RendererSettings("auto", None, "auto"))
    compositor: CompositorSettings = field(default_factory=CompositorSettings)
    virtualcam_device: str | None = None
    virtualcam_backend: str | None = None

    def __post_init__(self) -> None:
        if not self.sinks:
            raise ValueError("the peer needs at least one sink")
        if self.compositor.background.kind == "blur":
            raise UserError("--background blur needs the peer's camera image, which a "
                            "landmark-only call never sends: give a colour or an image")
        if self.compositor.follow_head:
            raise UserError("--follow-head needs the peer's camera image, which a "
                            "landmark-only call never sends")


def check_outputs(settings: ReceiveSettings) -> None:
    """Refuse, before the call connects, what could only fail once it runs: an unreadable
    background image, and sinks that cannot open here (each sink's ``check``: a file that is
    not .mp4, a window without a display, a missing virtual camera)."""
    Compositor(settings.compositor)  # reads the background image
    for sink in build_sinks(settings, DEFAULT_FPS, [], Controls(1)):
        sink.check()


def build_sinks(settings: ReceiveSettings, fps: float, avatars: Sequence[Avatar],
                controls: Controls, display: Display | None = None) -> list[Sink]:
    """The runtime's sinks for ``settings.sinks``, at the peer's frame rate (not opened);
    ``avatars``: the preview window's; ``display``: its display (None: OpenCV's)."""
    options = SinkOptions(settings.compositor.width, settings.compositor.height, fps,
                          settings.virtualcam_device, settings.virtualcam_backend)
    return [CallRecording(sink.path, sink.width, sink.height, sink.fps)
            if isinstance(sink, FileSink) else sink
            for sink in output_sinks(settings.sinks, options, controls, avatars, display)]


def torch_keeping_thread_count(source: GeneratorSource, options: BackendOptions) -> Backend:
    """The torch backend without ``threads``: torch has only a process-wide setting, which a
    call leaves as it is (the ONNX Runtime and TensorRT backends take theirs per session)."""
    from engines.torch_backend import TorchBackend

    return TorchBackend.load(source, dataclasses.replace(options, threads=None))


def call_backends() -> BackendRegistry:
    """The runtime's backends, torch keeping the process's thread count."""
    registry = default_backends()
    registry.register("torch", torch_keeping_thread_count)
    return registry


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (assumed so where that cannot be asked safely: on
    Windows ``os.kill`` would terminate it)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_compiled(folder: Path) -> list[Path]:
    """Remove the temporary compiled folders that calls of processes no longer running left
    in ``folder`` (a call killed outright cannot remove its own); returns them."""
    removed = []
    for path in folder.glob(f"{COMPILED_PREFIX}*"):
        pid = path.name.removeprefix(COMPILED_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or not path.is_dir() or path.is_symlink() or process_alive(int(pid)):
            continue
        try:
            if path.stat().st_uid != os.getuid():  # posix only: see process_alive
                continue
            shutil.rmtree(path)
        except OSError:
            continue
        removed.append(path)
    return removed


class CallFeed:
    """The pipeline's input during a call: the landmarks the call plays out, newest first
    (a live source: a slot replaced before the pipeline took it counts as ``dropped``)."""

    live = True

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.slot: Handoff[tuple[np.ndarray, float]] = Handoff("call->pipeline")

    def __enter__(self) -> CallFeed:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def put(self, landmarks: np.ndarray) -> None:
        """Landmarks played out now (their time goes along: the recording's clock)."""
        self.slot.put((landmarks, time.monotonic()))

    def close(self) -> None:
        self.slot.close()

    def frames(self, stop: threading.Event) -> Iterator[Captured]:
        while not stop.is_set():
            try:
                points = self.slot.get(POLL_SECONDS)
            except HandoffClosed:
                return
            if points is not None:
                yield Captured(points=points[0], timestamp=points[1])


class PipelineRenderer:
    """The call's ``Renderer``: the runtime's pipeline showing the peer's avatar in the
    chosen sinks, in a thread of its own (``start`` returns once the sinks are open and the
    generator is loaded and warmed up, or raises what stopped it; after ``close`` it returns
    early, having opened nothing more). The preview window goes through ``display`` (None:
    OpenCV's, used from that thread; the command line gives a ``MainThreadDisplay``).
    ``log``: where it says what takes long (closing while the generator still loads)."""

    def __init__(self, peer: PeerAvatar, fps: float, settings: ReceiveSettings,
                 registry: BackendRegistry | None = None, display: Display | None = None,
                 log: Callable[[str], None] = lambda message: None) -> None:
        self.peer = peer
        self.fps = fps
        self.settings = settings
        self.registry = registry if registry is not None else call_backends()
        self.display = display
        self.log = log
        self.rejected = 0
        self.feed = CallFeed(fps)
        self.controls = Controls(1)
        self.pipeline: Pipeline | None = None
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self.compiled_dir: Path | None = None
        self.recordings: list[CallRecording] = []
        self.ready = threading.Event()
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self.run, name="vcam-call-render", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            raise self.error

    def submit(self, landmarks: np.ndarray) -> None:
        """Hand landmarks on to the pipeline, unless they cannot be retargeted (then they are
        counted as ``rejected``)."""
        if can_drive(landmarks, self.peer.avatar.config.image_size):
            self.feed.put(landmarks)
        else:
            self.rejected += 1

    def run(self) -> None:
        """The render thread: open everything, run the pipeline until closed, release
        everything (the temporary compiled folder last)."""
        try:
            folder = (self.temporary_folder() if self.peer.call_only else nullcontext(None))
            with folder as compiled, ExitStack() as stack:
                self.compiled_dir = None if compiled is None else Path(compiled)
                pipeline = self.open_pipeline(stack)
                if pipeline is None or self.closing.is_set():
                    return
                self.pipeline = pipeline
                self.ready.set()
                self.summary = pipeline.run_opened()
        except BaseException as error:  # start() raises it, or `stopped` reports it
            self.error = error
        finally:
            self.ready.set()

    @staticmethod
    def temporary_folder() -> tempfile.TemporaryDirectory[str]:
        """A folder for compiling an avatar used in this call only, removed when the call
        ends (and by a later call if this process is killed first)."""
        remove_stale_compiled(Path(tempfile.gettempdir()))
        return tempfile.TemporaryDirectory(prefix=f"{COMPILED_PREFIX}{os.getpid()}-")

    def open_pipeline(self, stack: ExitStack) -> Pipeline | None:
        """Open the sinks and load the generator; None if ``close`` came first (checked
        before each sink and before the generator)."""
        avatar, settings = self.peer.avatar, self.settings
        sinks = build_sinks(settings, self.fps, [avatar], self.controls, self.display)
        self.recordings = [sink for sink in sinks if isinstance(sink, CallRecording)]
        for sink in sinks:
            if self.closing.is_set():
                return None
            stack.enter_context(sink)
        if self.closing.is_set():
            return None
        entry = AvatarEntry(avatar, self.peer.path, self.compiled_dir)
        library = stack.enter_context(AvatarLibrary([entry], settings.renderer, self.registry))
        pipeline_settings = PipelineSettings(
            fps=self.fps, compositor=settings.compositor, log_every=0.0,
            retarget=RetargetSettings(mode="relative"))
        return Pipeline(self.feed, library, sinks, pipeline_settings, None, self.controls,
                        driver_neutral=avatar.neutral_landmarks)

    def close(self) -> None:
        """Stop the pipeline, close the sinks and backends, remove what was compiled for
        this call only (blocking)."""
        self.closing.set()
        self.controls.stop.set()
        self.feed.close()
        if not self.thread.is_alive():
            return
        self.thread.join(CLOSE_NOTICE_S)
        if self.thread.is_alive():
            self.log("waiting for the renderer to stop")
            self.thread.join(CLOSE_TIMEOUT_S)

    @property
    def counts(self) -> dict[str, int]:
        """``rendered``: frames the generator rendered; ``skipped``: landmarks replaced by
        newer ones before they were rendered; ``output``: rendered frames that reached the
        sinks (the newest wins when two come within half a frame interval); ``rejected``:
        landmarks that could not be retargeted."""
        pipeline, summary = self.pipeline, self.summary
        if summary is not None:
            rendered, output = summary.frames_rendered, summary.frames_output
            dropped = summary.dropped_by_handoff
        elif pipeline is not None:
            rendered, output = pipeline.stats.stages["render"].frames, pipeline.stats.output.frames
            dropped = {name: handoff.dropped for name, handoff in pipeline.handoffs.items()}
        else:
            rendered, output, dropped = 0, 0, {}
        skipped = self.feed.dropped + sum(dropped.get(name, 0) for name in BEFORE_RENDER)
        return {"rendered": rendered, "output": output, "skipped": skipped,
                "rejected": self.rejected}

    @property
    def audio_outputs(self) -> list[CallRecording]:
        """The mp4 recordings, which take the peer's voice too."""
        return list(self.recordings)

    @property
    def stopped(self) -> RendererStop | None:
        if self.closing.is_set() or self.pipeline is None or self.thread.is_alive():
            return None
        if self.error is not None:
            message = " ".join(str(self.error).split()) or type(self.error).__name__
            return RendererStop(f"showing the peer failed: {message}", failed=True)
        if self.controls.quit_requested:
            return RendererStop("hung up from the preview window")
        reason = self.summary.reason if self.summary is not None else "stopped"
        return RendererStop(f"showing the peer stopped ({reason})", failed=True)

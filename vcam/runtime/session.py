"""One `vcam run`: the settings parsed from the options, and the run assembled from them.

:func:`settings_from_args` checks the options and freezes them into :class:`RunSettings`;
:func:`run` loads (or enrolls) the avatars, opens the input and the sinks, loads the
detector and the generator backends (:class:`~vcam.runtime.avatars.AvatarLibrary`, the
object that owns the models) and runs the :class:`~vcam.runtime.pipeline.Pipeline`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcam.avatar import Avatar
from vcam.errors import UserError
from vcam.landmarks.detector import LandmarkDetector, create_detector
from vcam.landmarks.tracker import FaceTracker
from vcam.runtime.avatars import AvatarEntry, AvatarLibrary, RendererSettings
from vcam.runtime.capture import (
    DEFAULT_FPS,
    CameraSource,
    FrameSource,
    VideoFileSource,
    video_fps,
)
from vcam.runtime.compositor import Background, CompositorSettings, check_layout
from vcam.runtime.controls import Controls
from vcam.runtime.demo import DemoAnimation, DemoSource
from vcam.runtime.file_sink import FileSink, check_output_file
from vcam.runtime.pipeline import Pipeline, PipelineSettings, RunSummary
from vcam.runtime.retarget import RetargetSettings
from vcam.runtime.sinks import (
    Display,
    Sink,
    SinkSpec,
    VirtualCameraSink,
    WindowSink,
)

logger = logging.getLogger("vcam.runtime")
# A demo written only to files is a clip of this length (unless --max-frames says otherwise).
DEMO_CLIP_SECONDS = 10.0


@dataclass(frozen=True)
class InputSpec:
    """``--input``: a camera index, a video file, or ``demo``."""

    kind: str
    camera_index: int = 0
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        if text == "demo":
            return cls("demo")
        if text.isdigit():
            return cls("camera", camera_index=int(text))
        path = Path(text)
        if not path.is_file():
            raise UserError(f"--input {text} is neither a camera index, a video file nor "
                            "'demo'")
        return cls("file", path=path)


@dataclass(frozen=True)
class RunSettings:
    """Everything `vcam run` was asked to do, parsed and checked."""

    avatars: tuple[str, ...]
    photo: Path | None
    model: Path | None
    input: InputSpec
    sinks: tuple[SinkSpec, ...]
    renderer: RendererSettings
    pipeline: PipelineSettings
    landmarks: str = "dlib"
    virtualcam_device: str | None = None
    json: bool = False
    force: bool = False


def default_threads() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """Check and freeze the options."""
    source = InputSpec.parse(args.input)
    fps = args.fps or (video_fps(source.path) if source.path is not None else DEFAULT_FPS)
    width, height = args.size
    compositor = CompositorSettings(width, height, Background.parse(args.background),
                                    follow_head=args.follow_head, mirror=args.mirror,
                                    layout=args.layout)
    check_layout(compositor)
    pipeline = PipelineSettings(fps=fps, max_frames=args.max_frames,
                                retarget=RetargetSettings(mode=args.retarget,
                                                          move_in_crop=not args.follow_head),
                                compositor=compositor)
    renderer = RendererSettings(args.backend, args.threads or default_threads(), args.device,
                                args.precision)
    sinks = tuple(SinkSpec.parse(text) for text in (args.sink or ["virtualcam"]))
    for spec in sinks:  # before anything slow: a refused file costs nothing
        if spec.path is not None:
            check_output_file(spec.path, width, height, args.force, input_files(source))
    return RunSettings(tuple(args.avatar or ()), args.photo, args.model, source, sinks,
                       renderer, pipeline, args.landmarks, args.virtualcam_device, args.json,
                       args.force)


def input_files(spec: InputSpec) -> tuple[Path, ...]:
    """The files a run reads frames from (which no sink may write)."""
    return () if spec.path is None else (spec.path,)


def run(settings: RunSettings) -> RunSummary:
    """Load the avatars, open input and sinks, load the models, run until stopped.

    The devices (camera, virtual camera, window) are opened before the slow part (landmark
    detector, generator backends), so a missing one is reported at once.
    """
    check_avatar_given(settings)
    needs_detector = settings.input.kind != "demo" or settings.photo is not None
    # Enrolling (--photo, or the built-in avatar on its first run) needs the detector before
    # the devices open: load it then when tracking needs it too, so it is loaded only once.
    early = settings.photo is not None or (uses_default_avatar(settings) and needs_detector)
    detector = create_landmark_detector(settings) if early else None
    entries = avatar_entries(settings, detector)
    controls = Controls(len(entries))
    source, driver_neutral = input_source(settings, entries)
    sinks = build_sinks(settings, entries, controls)
    with ExitStack() as devices:
        devices.enter_context(source)
        for sink in sinks:
            devices.enter_context(sink)
        if needs_detector and detector is None:
            detector = create_landmark_detector(settings)
        if settings.photo is not None:  # never saved: its ONNX form lives for this run only
            scratch = Path(devices.enter_context(tempfile.TemporaryDirectory(prefix="vcam-")))
            entries = [dataclasses.replace(entry, compiled_dir=scratch) for entry in entries]
        library = devices.enter_context(AvatarLibrary(entries, settings.renderer))
        log_backends(library)
        tracker = None if detector is None else FaceTracker(detector)
        pipeline = Pipeline(source, library, sinks, settings.pipeline, tracker, controls,
                            driver_neutral)
        return pipeline.run_opened()


def log_backends(library: AvatarLibrary) -> None:
    logger.info("rendering with %s", ", ".join(
        f"{info['name']} ({info['device']}, {info['precision']})"
        for info in library.describe()))


def create_landmark_detector(settings: RunSettings) -> LandmarkDetector:
    return create_detector(settings.landmarks, "cpu")


def check_avatar_given(settings: RunSettings) -> None:
    """Fail at once (before loading anything) when no avatar was asked for and no default
    model ships to enroll the built-in one with."""
    from vcam.models.store import default_model_path

    if settings.photo is None and not settings.avatars and settings.model is None:
        default_model_path()


def uses_default_avatar(settings: RunSettings) -> bool:
    return settings.photo is None and not settings.avatars


def avatar_entries(settings: RunSettings, detector: LandmarkDetector | None
                   ) -> list[AvatarEntry]:
    """The avatars to run: enrolled ones, one enrolled now from --photo, or the built-in
    default (enrolled once per model and cached)."""
    from vcam.avatar import load_avatar, resolve_avatar

    if settings.photo is not None:
        return [enroll_photo(settings, detector)]
    if uses_default_avatar(settings):
        return [default_avatar_entry(settings, detector)]
    paths = [resolve_avatar(name) for name in settings.avatars]  # all names checked first
    return [AvatarEntry(load_avatar(path), path) for path in paths]


def enroll_photo(settings: RunSettings, detector: LandmarkDetector | None
                 ) -> AvatarEntry:
    """Feed-forward enrollment of ``settings.photo`` (nothing is saved)."""
    from vcam.enroll import enroll, read_photo
    from vcam.models.store import default_model_path, load_models
    from vcam.train.finetune import FineTuneSettings

    assert settings.photo is not None and detector is not None
    photo = read_photo(settings.photo)
    model_path = settings.model or default_model_path()
    models = load_models(model_path, discriminator=False)
    avatar, enrollment = enroll([photo], settings.photo.stem, models, detector,
                                FineTuneSettings(), str(model_path))
    for warning in enrollment.warnings:
        logger.warning(warning)
    return AvatarEntry(avatar)


def default_avatar_entry(settings: RunSettings, detector: LandmarkDetector | None
                         ) -> AvatarEntry:
    """The built-in avatar: scikit-image's astronaut photo (public domain) enrolled
    feed-forward with the model in use, cached in the vcam home per model checksum."""
    return builtin_avatar(settings.model,
                          lambda: detector or create_landmark_detector(settings))


def builtin_avatar(model: Path | None, detector: Callable[[], LandmarkDetector]
                   ) -> AvatarEntry:
    """The built-in avatar for ``model`` (None: the default model), enrolled with the
    detector ``detector()`` gives unless cached."""
    from vcam.avatar import BUILTIN_AVATAR_NAME, BUILTIN_CREATED, load_avatar, save_avatar
    from vcam.data.synthetic import astronaut
    from vcam.enroll import Photo, enroll
    from vcam.models.store import default_model_path, load_models, model_checksum
    from vcam.train.finetune import FineTuneSettings

    model_path = model or default_model_path()
    cached = default_avatar_path(model_checksum(model_path))
    if cached.is_file():
        try:
            return AvatarEntry(load_avatar(cached), cached)
        except UserError as error:
            logger.warning("enrolling the built-in avatar again: %s", error)
    logger.info("enrolling the built-in avatar (the astronaut photo from scikit-image, "
                "public domain); it is cached for the next run")
    avatar, _ = enroll([Photo(BUILTIN_AVATAR_NAME, astronaut())], BUILTIN_AVATAR_NAME,
                       load_models(model_path, discriminator=False), detector(),
                       FineTuneSettings(), str(model_path))
    avatar = dataclasses.replace(avatar, info={**avatar.info, "created": BUILTIN_CREATED})
    save_avatar(avatar, cached, force=True)
    # Loaded back: the saved bundle's checksum finds (or makes) its ONNX form, so even the
    # first run renders with ONNX Runtime.
    return AvatarEntry(load_avatar(cached), cached)


def default_avatar_path(model_checksum: str) -> Path:
    from vcam.avatar import BUILTIN_AVATAR_NAME, SUFFIX, builtin_cache_dir

    return builtin_cache_dir() / f"{BUILTIN_AVATAR_NAME}-{model_checksum[:16]}{SUFFIX}"


def input_source(settings: RunSettings, entries: list[AvatarEntry]
                 ) -> tuple[FrameSource, np.ndarray | None]:
    """The frame source, and the driver's known neutral face (demo input only)."""
    first = entries[0].avatar
    source = frame_source(settings.input, settings.pipeline.fps, first,
                          demo_clip_frames(settings))
    return source, first.neutral_landmarks if settings.input.kind == "demo" else None


def frame_source(spec: InputSpec, fps: float, demo_avatar: Avatar,
                 demo_frames: int | None = None) -> FrameSource:
    """The source for ``--input`` (not opened): a camera at ``fps``, a video file, or the
    demo animating ``demo_avatar`` at ``fps`` (``demo_frames``: a clip of that many frames;
    None: live and endless)."""
    if spec.kind == "demo":
        animation = DemoAnimation(demo_avatar.neutral_landmarks, demo_avatar.config.image_size)
        return DemoSource(animation, fps, demo_frames)
    if spec.kind == "file" and spec.path is not None:
        return VideoFileSource(spec.path)
    return CameraSource(spec.camera_index, fps)


def demo_clip_frames(settings: RunSettings) -> int | None:
    """With only file sinks the demo is a clip (``DEMO_CLIP_SECONDS``, or ``--max-frames``)
    rendered as fast as possible; with a camera or window sink it is live and endless."""
    if any(spec.kind != "file" for spec in settings.sinks):
        return None
    limit = settings.pipeline.max_frames
    return limit if limit > 0 else round(DEMO_CLIP_SECONDS * settings.pipeline.fps)


def build_sinks(settings: RunSettings, entries: list[AvatarEntry], controls: Controls
                ) -> list[Sink]:
    compositor = settings.pipeline.compositor
    return output_sinks(settings.sinks, SinkOptions(
        compositor.width, compositor.height, settings.pipeline.fps, settings.virtualcam_device,
        force=settings.force, inputs=input_files(settings.input)),
        controls, [entry.avatar for entry in entries])


@dataclass(frozen=True)
class SinkOptions:
    """What the sinks share: the canvas size, the output rate, the virtual camera to use
    (``virtualcam_backend``: a pyvirtualcam backend name; None tries every one installed),
    whether files may be replaced (``force``) and the files the run reads (``inputs``)."""

    width: int
    height: int
    fps: float
    virtualcam_device: str | None = None
    virtualcam_backend: str | None = None
    force: bool = False
    inputs: tuple[Path, ...] = ()


def output_sinks(specs: Sequence[SinkSpec], options: SinkOptions, controls: Controls,
                 avatars: Sequence[Avatar], display: Display | None = None) -> list[Sink]:
    """The sinks for ``--sink`` (not opened); ``avatars``: the window's, by index;
    ``display``: the window's (None: OpenCV's)."""
    width, height, fps = options.width, options.height, options.fps
    sinks: list[Sink] = []
    for spec in specs:
        if spec.kind == "virtualcam":
            sinks.append(VirtualCameraSink(width, height, fps, options.virtualcam_device,
                                           options.virtualcam_backend))
        elif spec.kind == "window":
            sinks.append(WindowSink(width, height, controls,
                                    [avatar.name for avatar in avatars],
                                    [avatar.config.image_size for avatar in avatars],
                                    display))
        elif spec.path is not None:
            sinks.append(FileSink(spec.path, width, height, fps, options.force,
                                  options.inputs))
    return sinks

"""Compiled forms of an avatar's generator: ONNX files (FP32, FP16, INT8) and TensorRT
engines, kept in the user's data folder under the avatar's checksum, so the runtime finds them
by itself and a changed avatar never reuses a stale file.

``vcam compile`` exports and checks them ahead of time; the runtime exports the FP32 ONNX file
on first use when a backend needs one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from calibration.sets import CalibrationSetSpec, landmark_images, sweep_landmarks
from engines.backend import BackendOptions, GeneratorSource, NoBackendError, create_backend
from engines.export import (
    ExportMismatchError,
    ExportOptions,
    ExportResult,
    export_onnx,
    onnx_frames,
    verify_backend,
)
from vcam.avatar import Avatar, vcam_home
from vcam.errors import UserError
from vcam.images import to_tensor
from vcam.landmarks.raster import rasterise
from vcam.warp import RUNTIME_WARP_SOURCE, WarpGuide

# Inputs used to check each exported model against torch, and to calibrate INT8.
CHECK_COUNT = 16
CALIBRATION_COUNT = 64
# Backends that run the generator from its exported ONNX file.
ONNX_BACKENDS = ("auto", "onnxruntime", "tensorrt")


def compiled_dir(avatar: Avatar) -> Path:
    if not avatar.checksum:
        raise ValueError("only a saved (checksummed) avatar has compiled forms")
    return vcam_home() / "compiled" / avatar.checksum[:24]


def onnx_path(avatar: Avatar, precision: str) -> Path:
    return compiled_dir(avatar) / f"generator-{precision}.onnx"


def generator_inputs(avatar: Avatar, count: int, seed: int) -> np.ndarray:
    """(count, C, S, S) float32 inputs: the avatar's neutral landmarks moved through a sweep
    of head poses and expressions (plus the warped enrollment image for the warp variant)."""
    size = avatar.config.image_size
    spec = CalibrationSetSpec(size=size, count=count, seed=seed)
    points = sweep_landmarks(avatar.neutral_landmarks, spec)
    images = landmark_images(points, size, rasterise)
    if avatar.config.generator != "warp":
        return images
    guide = WarpGuide(avatar.crops, avatar.landmarks, RUNTIME_WARP_SOURCE,
                      cavity=avatar.config.mouth_cavity)
    warped = np.stack([to_tensor(guide.network_image(p, guide.image_for(p))).numpy()
                       for p in points])
    return np.concatenate([images, warped], axis=1).astype(np.float32)


def check_tensorrt_here() -> None:
    """A one-line ``UserError`` now, before any export, when TensorRT cannot run here."""
    from engines.tensorrt_backend import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        raise UserError(f"cannot build a TensorRT engine here: {reason}")


def render_once(avatar: Avatar) -> np.ndarray:
    """One frame (1, 3, S, S) rendered with torch from the avatar's own landmarks: proof
    that a bundle from elsewhere is usable before it is kept; ``UserError`` otherwise."""
    import torch

    try:
        with torch.inference_mode():
            frame = avatar.generator()(torch.from_numpy(generator_inputs(avatar, 1, seed=0)))
    except (RuntimeError, ValueError) as error:
        raise UserError(f"avatar {avatar.name!r} cannot be rendered: "
                        f"{str(error).splitlines()[0][:120]}") from None
    if not bool(torch.isfinite(frame).all()):
        raise UserError(f"avatar {avatar.name!r} renders values that are not finite")
    return frame.numpy()


def export_avatar(avatar: Avatar, precision: str, out: Path | None = None,
                  threads: int | None = None) -> ExportResult:
    """Export (and check) the avatar's generator to ONNX; refuses to save a mismatch."""
    path = out or onnx_path(avatar, precision)
    path.parent.mkdir(parents=True, exist_ok=True)
    checks = generator_inputs(avatar, CHECK_COUNT, seed=1)
    calibration = (generator_inputs(avatar, CALIBRATION_COUNT, seed=2)
                   if precision == "int8" else None)
    try:
        return export_onnx(avatar.generator(), path, checks,
                           ExportOptions(precision=precision, threads=threads), calibration)
    except ExportMismatchError as error:
        raise UserError(f"export refused: {error}") from None


def generator_source(avatar: Avatar, backend: str, precision: str = "fp32",
                     announce: bool = True, folder: Path | None = None) -> GeneratorSource:
    """What a backend needs to render this avatar: the torch module, and the compiled ONNX
    file of that precision (exported now, once, if it is missing and the backend needs it).
    The file is kept in the user's data folder under the avatar's checksum (an avatar that
    was never saved has none: the torch module only), or in ``folder`` when one is given."""
    module = avatar.generator()
    if folder is not None:
        path: Path | None = folder / f"generator-{precision}.onnx"
    else:
        path = onnx_path(avatar, precision) if avatar.checksum else None
    # TensorRT calibrates INT8 itself from the FP32 graph; ONNX Runtime needs the QDQ file.
    exports = precision != "int8" or backend != "tensorrt"
    if path is not None and backend in ONNX_BACKENDS and not path.exists() and exports:
        if announce:
            print(f"vcam: exporting {avatar.name}'s generator to ONNX ({precision}) once",
                  file=sys.stderr)
        export_avatar(avatar, precision, out=path)
    calibration = (generator_inputs(avatar, CALIBRATION_COUNT, seed=2)
                   if backend == "tensorrt" and precision == "int8" else None)
    return GeneratorSource(
        image_size=avatar.config.image_size, module=module,
        onnx_path=path if path is not None and path.exists() else None,
        calibration_images=calibration,
        input_channels=avatar.config.generator_input_channels)


def build_tensorrt_engine(avatar: Avatar, onnx_file: Path, precision: str) -> dict:
    """Build (or reuse) the avatar's TensorRT engine from ``onnx_file`` and check it against
    ONNX Runtime; the engine's description."""
    source = GeneratorSource(
        image_size=avatar.config.image_size, module=avatar.generator(), onnx_path=onnx_file,
        calibration_images=generator_inputs(avatar, CALIBRATION_COUNT, seed=2)
        if precision == "int8" else None,
        input_channels=avatar.config.generator_input_channels)
    try:
        backend = create_backend("tensorrt", source, BackendOptions(device="cuda",
                                                                    precision=precision))
    except NoBackendError as error:
        raise UserError(f"cannot build a TensorRT engine here: {error.reasons['tensorrt']}") \
            from None
    images = generator_inputs(avatar, CHECK_COUNT, seed=1)
    try:
        verify_backend(backend, images, onnx_frames(onnx_file, images), precision)
    except ExportMismatchError as error:
        raise UserError(f"TensorRT engine refused: {error}") from None
    info = backend.describe().to_dict()
    backend.close()
    return {"engine": info.get("model_path") or "cached", "info": info}

"""A learned linear shape basis for 68-point faces: the mean shape and principal components.

Landmarks are taken in avatar-crop pixels and divided by the crop size, so a basis fitted on
256 px crops serves any crop size. A shape is flattened as ``x0, y0, x1, y1, ...`` (136
numbers). ``project`` gives the coefficients of a shape against the top ``k`` components,
``reconstruct`` goes back; ``full_transform`` completes the components to an orthonormal
basis of all 136 dimensions, which the landmark codec quantises (the completion carries the
residual that the top ``k`` leave).

On disk a basis is ``NAME.safetensors`` (``mean``, ``components``, ``stddevs``, float64) with
``NAME.json`` beside it (format, version, counts and a SHA-256 of the tensor file); nothing
is ever unpickled.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from calibration.ibug import NUM_LANDMARKS
from vcam.errors import UserError
from vcam.files import atomic_write_bytes

COORDINATES = 2 * NUM_LANDMARKS
BASIS_FORMAT = "vcam-shape-basis"
BASIS_VERSION = 1
# A basis file is a few hundred kilobytes at most; anything far larger is refused unread.
MAX_BASIS_BYTES = 4 << 20
ORTHONORMAL_TOLERANCE = 1e-6


def normalise(landmarks: np.ndarray, crop_size: float) -> np.ndarray:
    """(..., 68, 2) crop pixels -> (..., 136) float64 in units of the crop size."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape[-2:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must be (..., {NUM_LANDMARKS}, 2), got {points.shape}")
    return points.reshape(*points.shape[:-2], COORDINATES) / float(crop_size)


def denormalise(shapes: np.ndarray, crop_size: float) -> np.ndarray:
    """(..., 136) in units of the crop size -> (..., 68, 2) float32 crop pixels."""
    shapes = np.asarray(shapes, dtype=np.float64)
    return (shapes * float(crop_size)).reshape(*shapes.shape[:-1], NUM_LANDMARKS, 2).astype(
        np.float32)


@dataclass(frozen=True, eq=False)
class ShapeBasis:
    """Mean shape (136,), orthonormal components (k, 136) ordered by falling variance, and
    the standard deviation (k,) of each coefficient over the fitting set, all in units of
    the crop size; ``samples`` is how many shapes it was fitted on."""

    mean: np.ndarray
    components: np.ndarray
    stddevs: np.ndarray
    samples: int

    def __post_init__(self) -> None:
        check_arrays(self.mean, self.components, self.stddevs)

    @property
    def count(self) -> int:
        """How many components (k)."""
        return len(self.components)

    def project(self, landmarks: np.ndarray, crop_size: float) -> np.ndarray:
        """(..., 68, 2) crop pixels -> (..., k) coefficients."""
        return (normalise(landmarks, crop_size) - self.mean) @ self.components.T

    def reconstruct(self, coefficients: np.ndarray, crop_size: float) -> np.ndarray:
        """(..., j) coefficients of the first j <= k components -> (..., 68, 2) crop pixels."""
        coefficients = np.asarray(coefficients, dtype=np.float64)
        used = self.components[:coefficients.shape[-1]]
        return denormalise(self.mean + coefficients @ used, crop_size)

    def truncated(self, count: int) -> ShapeBasis:
        """The same basis keeping only its first ``count`` components."""
        if not 1 <= count <= self.count:
            raise ValueError(f"count must be in 1..{self.count}, got {count}")
        return ShapeBasis(self.mean, self.components[:count], self.stddevs[:count],
                          self.samples)

    @cached_property
    def full_transform(self) -> np.ndarray:
        """(136, 136) orthonormal rows: the k components, then an orthonormal completion."""
        if self.count == COORDINATES:
            return self.components
        stacked = np.concatenate([self.components.T, np.eye(COORDINATES)], axis=1)
        orthonormal, _ = np.linalg.qr(stacked)
        return np.concatenate([self.components, orthonormal[:, self.count:].T])

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the mean and components: both ends of a call must agree on it."""
        digest = hashlib.sha256()
        for array in (self.mean, self.components):
            digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
        return digest.hexdigest()


def check_arrays(mean: np.ndarray, components: np.ndarray, stddevs: np.ndarray) -> None:
    """Refuse arrays that do not form a basis (wrong shapes, non-finite, not orthonormal)."""
    count = len(components) if np.ndim(components) == 2 else 0
    if (np.shape(mean) != (COORDINATES,) or np.shape(components) != (count, COORDINATES)
            or np.shape(stddevs) != (count,) or not 1 <= count <= COORDINATES):
        raise ValueError(f"a shape basis needs mean ({COORDINATES},), components (k, "
                         f"{COORDINATES}) and stddevs (k,) with 1 <= k <= {COORDINATES}")
    if not all(np.isfinite(array).all() for array in (mean, components, stddevs)):
        raise ValueError("a shape basis must hold finite numbers only")
    gram = components @ components.T
    if np.abs(gram - np.eye(count)).max() > ORTHONORMAL_TOLERANCE:
        raise ValueError("shape basis components are not orthonormal")


def fit_shape_basis(landmarks: np.ndarray, components: int,
                    crop_size: float = 256.0) -> ShapeBasis:
    """PCA of (N, 68, 2) landmarks in crop pixels of ``crop_size`` px crops, keeping the top
    ``components`` (at most 136). With fewer shapes than components the rest of the basis is
    an orthonormal completion whose coefficients had no variance in the fitting set."""
    shapes = normalise(landmarks, crop_size)
    if shapes.ndim != 2 or len(shapes) < 2:
        raise ValueError("fitting a shape basis needs at least two (68, 2) shapes")
    if not 1 <= components <= COORDINATES:
        raise ValueError(f"components must be in 1..{COORDINATES}, got {components}")
    if not np.isfinite(shapes).all():
        raise ValueError("landmarks to fit a shape basis on must be finite")
    mean = shapes.mean(axis=0)
    centred = shapes - mean
    variances, vectors = np.linalg.eigh(centred.T @ centred / len(shapes))
    order = np.argsort(variances)[::-1][:components]
    return ShapeBasis(mean, np.ascontiguousarray(vectors[:, order].T),
                      np.sqrt(np.clip(variances[order], 0.0, None)), len(shapes))


def metadata_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_shape_basis(basis: ShapeBasis, path: Path) -> None:
    """Write ``path`` (safetensors) and its JSON metadata beside it, each atomically."""
    payload = save_tensors({"mean": basis.mean, "components": basis.components,
                            "stddevs": basis.stddevs})
    metadata = {"format": BASIS_FORMAT, "version": BASIS_VERSION, "landmarks": NUM_LANDMARKS,
                "components": basis.count, "samples": basis.samples,
                "units": "crop size (landmark pixels / crop pixels)",
                "fingerprint": basis.fingerprint,
                "sha256": hashlib.sha256(payload).hexdigest()}
    atomic_write_bytes(path, payload)
    atomic_write_bytes(metadata_path(path), (json.dumps(metadata, indent=1) + "\n").encode())


def load_shape_basis(path: Path) -> ShapeBasis:
    """Read a basis written by ``save_shape_basis``; a one-line ``UserError`` if the files
    are missing, from another version, corrupt or not a basis."""
    metadata = read_metadata(metadata_path(path))
    try:
        if path.stat().st_size > MAX_BASIS_BYTES:
            raise UserError(f"{path} is too large to be a shape basis")
        payload = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read shape basis {path}: {error.strerror or error}") from None
    if hashlib.sha256(payload).hexdigest() != metadata.get("sha256"):
        raise UserError(f"{path} does not match the checksum in {metadata_path(path)}: "
                        "the basis file is corrupt or was replaced")
    try:
        arrays = load_tensors(payload)
        basis = ShapeBasis(arrays["mean"], arrays["components"], arrays["stddevs"],
                           int(metadata.get("samples", 0)))
    except (SafetensorError, KeyError, ValueError, TypeError) as error:
        raise UserError(f"{path} is not a valid shape basis ({error})") from None
    return basis


def read_metadata(path: Path) -> dict:
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read shape basis metadata {path}: {error}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != BASIS_FORMAT:
        raise UserError(f"{path} is not shape basis metadata")
    if metadata.get("version") != BASIS_VERSION:
        raise UserError(f"{path} is shape basis version {metadata.get('version')}; this vcam "
                        f"reads version {BASIS_VERSION}")
    return metadata


# The built-in synthetic basis

BASIS_CROP = 256
BASIS_COMPONENTS = 11
BASIS_GRID = 2.0 ** -24
BASIS_POSES = {"yaw": (-30, -15, 0, 15, 30), "pitch": (-15, 0, 15), "roll": (-10, 0, 10),
               "scale": (0.9, 1.1), "shift_x": (-0.04, 0.04)}
BASIS_EXPRESSIONS = {"mouth_open": (0.0, 0.5, 1.0), "blink": (0.0, 1.0),
                     "brow_raise": (0.0, 1.0)}


def synthetic_shape_basis() -> ShapeBasis:
    """The built-in basis, used when this copy of vcam ships none with its default model
    (``vcam.models.store.default_shape_basis`` prefers the shipped one): PCA
    (``fit_shape_basis``) of a synthetic set (the calibration package's neutral face through
    a fixed grid of head poses and expressions, 2160 shapes), keeping the 11 components whose
    variances are well apart, each sign-fixed and every number rounded to a 2**-24 grid so
    that machines whose arithmetic differs in the last bits still agree on the fingerprint."""
    from calibration.sets import Expression, HeadPose, apply_expression, apply_pose, neutral_face

    neutral = neutral_face(BASIS_CROP)
    shapes = [apply_pose(apply_expression(neutral, Expression(**expression)), HeadPose(**pose),
                         BASIS_CROP)
              for pose in grid(BASIS_POSES) for expression in grid(BASIS_EXPRESSIONS)]
    fitted = fit_shape_basis(np.asarray(shapes), BASIS_COMPONENTS, BASIS_CROP)
    signs = np.sign(fitted.components[np.arange(fitted.count),
                                      np.abs(fitted.components).argmax(axis=1)])
    return ShapeBasis(on_grid(fitted.mean), on_grid(fitted.components * signs[:, None]),
                      on_grid(fitted.stddevs), fitted.samples)


def grid(axes: dict[str, tuple[float, ...]]) -> Iterator[dict[str, float]]:
    names = list(axes)
    for values in itertools.product(*(axes[name] for name in names)):
        yield dict(zip(names, values))


def on_grid(values: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(values, np.float64) / BASIS_GRID) * BASIS_GRID

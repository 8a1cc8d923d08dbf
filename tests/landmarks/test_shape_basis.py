"""The learned shape basis: fitting, projection, saving and loading."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from vcam.errors import UserError
from vcam.landmarks.shape_basis import (
    COORDINATES,
    ShapeBasis,
    fit_shape_basis,
    load_shape_basis,
    save_shape_basis,
)

CROP = 256


def synthetic_shapes(count: int, seed: int = 0) -> np.ndarray:
    """(count, 68, 2) crop-pixel shapes: one face template moved by six modes (the same for
    every seed) with random weights, plus noise."""
    face = np.random.default_rng(1234)
    template = face.uniform([78, 68], [178, 198], (68, 2))
    modes = face.normal(0, 1, (6, 68, 2)) * np.array([8, 6, 4, 3, 2, 1])[:, None, None]
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1, (count, 6))
    noise = rng.normal(0, 0.2, (count, 68, 2))
    return (template + np.einsum("nm,mpc->npc", weights, modes) + noise).astype(np.float32)


def mean_error(basis: ShapeBasis, shapes: np.ndarray) -> float:
    rebuilt = basis.reconstruct(basis.project(shapes, CROP), CROP)
    return float(np.linalg.norm(rebuilt - shapes, axis=-1).mean())


def test_components_are_orthonormal_and_ordered() -> None:
    basis = fit_shape_basis(synthetic_shapes(300), 20)
    assert basis.components.shape == (20, COORDINATES)
    np.testing.assert_allclose(basis.components @ basis.components.T, np.eye(20), atol=1e-9)
    assert np.all(np.diff(basis.stddevs) <= 1e-12)
    full = basis.full_transform
    np.testing.assert_allclose(full @ full.T, np.eye(COORDINATES), atol=1e-9)
    np.testing.assert_array_equal(full[:20], basis.components)


def test_error_falls_with_more_components() -> None:
    train, held_out = synthetic_shapes(400, seed=1), synthetic_shapes(50, seed=2)
    basis = fit_shape_basis(train, COORDINATES)
    errors = [mean_error(basis.truncated(count), held_out) for count in (1, 2, 4, 6, 32, 136)]
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(errors))
    assert errors[0] > 5 * errors[3]
    assert errors[-1] < 1e-6


def test_basis_is_crop_size_independent() -> None:
    shapes = synthetic_shapes(200)
    large, small = fit_shape_basis(shapes, 10, CROP), fit_shape_basis(shapes / 4, 10, CROP / 4)
    np.testing.assert_allclose(large.mean, small.mean, atol=1e-12)
    np.testing.assert_allclose(np.abs(large.components @ small.components.T), np.eye(10),
                               atol=1e-6)
    coefficients = large.project(shapes[:3], CROP)
    np.testing.assert_allclose(large.reconstruct(coefficients, CROP / 4),
                               small.reconstruct(small.project(shapes[:3] / 4, CROP / 4),
                                                 CROP / 4), atol=1e-3)


def test_fewer_shapes_than_components_still_gives_a_full_basis() -> None:
    basis = fit_shape_basis(synthetic_shapes(12), COORDINATES)
    assert basis.count == COORDINATES
    np.testing.assert_allclose(basis.components @ basis.components.T, np.eye(COORDINATES),
                               atol=1e-9)


def test_save_load_round_trip(tmp_path) -> None:
    basis = fit_shape_basis(synthetic_shapes(100), 16)
    path = tmp_path / "shape_basis.safetensors"
    save_shape_basis(basis, path)
    loaded = load_shape_basis(path)
    np.testing.assert_array_equal(loaded.mean, basis.mean)
    np.testing.assert_array_equal(loaded.components, basis.components)
    np.testing.assert_array_equal(loaded.stddevs, basis.stddevs)
    assert loaded.samples == 100 and loaded.fingerprint == basis.fingerprint
    metadata = json.loads(path.with_suffix(".json").read_text())
    assert metadata["components"] == 16 and metadata["fingerprint"] == basis.fingerprint


def test_load_refuses_a_corrupt_or_foreign_file(tmp_path) -> None:
    path = tmp_path / "basis.safetensors"
    save_shape_basis(fit_shape_basis(synthetic_shapes(50), 4), path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        load_shape_basis(path)
    metadata = path.with_suffix(".json")
    metadata.write_text(json.dumps({"format": "vcam-shape-basis", "version": 99}))
    with pytest.raises(UserError, match="version"):
        load_shape_basis(path)
    with pytest.raises(UserError):
        load_shape_basis(tmp_path / "missing.safetensors")


def test_fit_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        fit_shape_basis(synthetic_shapes(1), 4)
    with pytest.raises(ValueError):
        fit_shape_basis(synthetic_shapes(10), 0)
    with pytest.raises(ValueError):
        fit_shape_basis(np.zeros((10, 5, 2)), 4)
    shapes = synthetic_shapes(10)
    shapes[3, 4, 0] = np.nan
    with pytest.raises(ValueError):
        fit_shape_basis(shapes, 4)

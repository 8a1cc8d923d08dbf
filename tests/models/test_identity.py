"""The PyTorch port of dlib's face-recognition ResNet against dlib itself."""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
import torch

from vcam.landmarks.align import crop_face, crop_transform_for
from vcam.landmarks.models import model_file
from vcam.models.identity import (
    CHIP_SIZE,
    DESCRIPTOR_SIZE,
    MODEL_FILE,
    FaceIdentityNet,
    crop_to_chip,
    read_dlib_net,
)

skimage_data = pytest.importorskip("skimage.data")

TOLERANCE = 1e-4
# dlib's decision threshold: descriptors of one person lie closer than this.
SAME_PERSON = 0.6
FACES = ("astronaut", "flipped", "small", "rotated", "darker")


def astronaut_variants() -> dict[str, np.ndarray]:
    """The astronaut photo and versions of it that give differently resampled chips."""
    image = skimage_data.astronaut()
    height, width = image.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), 12, 1.0)
    return {
        "astronaut": image,
        "flipped": np.ascontiguousarray(image[:, ::-1]),
        "small": cv2.resize(image, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA),
        "rotated": cv2.warpAffine(
            image, turn, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        ),
        "darker": (image * 0.6).astype(np.uint8),
    }


def face_shape(image: np.ndarray, detector, predictor) -> dlib.full_object_detection:
    """dlib's 68 landmarks of the best-scoring face."""
    boxes, scores, _ = detector.run(image, 1, 0.0)
    assert boxes, "dlib found no face"
    return predictor(image, boxes[int(np.argmax(scores))])


def vcam_crop(image: np.ndarray, shape: dlib.full_object_detection) -> torch.Tensor:
    """The face as vcam crops it, (1, 3, 256, 256) in [-1, 1]."""
    points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
    crop = crop_face(image, crop_transform_for(points))
    return torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_tensor(chips: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def net() -> FaceIdentityNet:
    return FaceIdentityNet.from_dlib()


@pytest.fixture(scope="module")
def shapes() -> dict[str, tuple[np.ndarray, dlib.full_object_detection]]:
    """Each astronaut variant with its face's landmarks."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    return {
        name: (image, face_shape(image, detector, predictor))
        for name, image in astronaut_variants().items()
    }


@pytest.fixture(scope="module")
def chips(
    shapes: dict[str, tuple[np.ndarray, dlib.full_object_detection]],
) -> dict[str, np.ndarray]:
    """dlib's aligned chips of the astronaut's face, plus two images that are no face."""
    chips = {
        name: dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25)
        for name, (image, shape) in shapes.items()
    }
    for name in ("chelsea", "coffee"):
        image = getattr(skimage_data, name)()
        chips[name] = cv2.resize(image, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_AREA)
    return chips


@pytest.fixture(scope="module")
def dlib_descriptors(chips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    recognizer = dlib.face_recognition_model_v1(str(model_file(MODEL_FILE)))
    return {
        name: np.array(recognizer.compute_face_descriptor(chip)) for name, chip in chips.items()
    }


@pytest.fixture(scope="module")
def port_descriptors(net: FaceIdentityNet, chips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        descriptors = net(to_tensor(list(chips.values()))).numpy()
    return dict(zip(chips, descriptors))


@pytest.mark.parametrize("name", [*FACES, "chelsea"])
def test_descriptor_matches_dlib(
    name: str, dlib_descriptors: dict[str, np.ndarray], port_descriptors: dict[str, np.ndarray]
) -> None:
    expected, actual = dlib_descriptors[name], port_descriptors[name]
    assert actual.shape == (DESCRIPTOR_SIZE,)
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_same_face_is_closer_than_other_images(port_descriptors: dict[str, np.ndarray]) -> None:
    reference = port_descriptors["astronaut"]
    same = [np.linalg.norm(port_descriptors[name] - reference) for name in FACES[1:]]
    other = [np.linalg.norm(port_descriptors[name] - reference) for name in ("chelsea", "coffee")]
    assert max(same) < SAME_PERSON < min(other)


def test_gradients_reach_the_input_only(net: FaceIdentityNet, chips: dict[str, np.ndarray]) -> None:
    x = to_tensor([chips["astronaut"]]).requires_grad_()
    features = net.features(x)
    loss = net.descriptor(features).square().sum() + sum(f.mean() for f in features)
    loss.backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_features_shapes(net: FaceIdentityNet) -> None:
    with torch.no_grad():
        features = net.features(torch.full((2, 3, CHIP_SIZE, CHIP_SIZE), 128.0))
    assert [tuple(f.shape[1:]) for f in features] == [
        (32, 35, 35),
        (32, 35, 35),
        (64, 17, 17),
        (128, 8, 8),
        (256, 4, 4),
        (256, 2, 2),
    ]


def test_rejects_wrong_chip_size(net: FaceIdentityNet) -> None:
    with pytest.raises(ValueError, match="chips must be"):
        net(torch.zeros(1, 3, 128, 128))


def test_crop_to_chip_maps_range_and_is_differentiable() -> None:
    crops = torch.linspace(-1, 1, 256).expand(2, 3, 256, 256).clone().requires_grad_()
    chips = crop_to_chip(crops, box=(0.1, 0.1, 0.9, 0.9))
    assert chips.shape == (2, 3, CHIP_SIZE, CHIP_SIZE)
    assert chips.min() >= 0 and chips.max() <= 255
    assert crop_to_chip(torch.ones(1, 3, 256, 256)).allclose(torch.tensor(255.0))
    chips.sum().backward()
    assert crops.grad is not None and crops.grad.abs().sum() > 0


def test_reader_finds_the_anet_layout() -> None:
    net = read_dlib_net(model_file(MODEL_FILE))
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == kinds.count("affine") == 29
    assert kinds[-1] == "fc" and net.layers[-1].weight.shape == (DESCRIPTOR_SIZE, 256)
    assert net.input_size == (CHIP_SIZE, CHIP_SIZE)
    assert np.allclose(net.input_means, (122.782, 117.001, 104.298), atol=1e-4)


@pytest.mark.parametrize("cut", [0, 1, 300, 5_000_000])
def test_reader_rejects_truncated_files(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "model.dat"
    path.write_bytes(model_file(MODEL_FILE).read_bytes()[:cut])
    with pytest.raises(ValueError):
        read_dlib_net(path)


def test_vcam_crop_lands_near_dlibs_chip(
    net: FaceIdentityNet,
    shapes: dict[str, tuple[np.ndarray, dlib.full_object_detection]],
    port_descriptors: dict[str, np.ndarray],
) -> None:
    with torch.no_grad():
        descriptor = net(crop_to_chip(vcam_crop(*shapes["astronaut"])))[0].numpy()
    assert np.linalg.norm(descriptor - port_descriptors["astronaut"]) < 0.25

"""The face-alignment backend, with a randomly initialised FAN checkpoint in torch's cache
(the real weights are downloaded by face-alignment, which this machine cannot do)."""

import numpy as np
import pytest
import torch

from vcam.errors import UserError
from vcam.landmarks.detector import create_detector
from vcam.landmarks.fan_backend import fan_weights_path


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_missing_weights_name_the_cache_path(torch_home):
    with pytest.raises(UserError) as raised:
        create_detector("face-alignment")
    message = str(raised.value)
    assert str(torch_home / "hub" / "checkpoints") in message
    assert "2DFAN4" in message and "\n" not in message


@pytest.mark.slow
def test_random_fan_checkpoint_gives_68_points(torch_home, astronaut_image):
    from face_alignment.models import FAN

    path = fan_weights_path()
    assert path.parent == torch_home / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), path)
    detector = create_detector("face-alignment")
    faces = detector.detect(astronaut_image)
    assert len(faces) == 1
    points = faces[0].points
    assert points.shape == (68, 2) and points.dtype == np.float32
    # Random weights give arbitrary points, but always inside FAN's crop around the face.
    x0, y0, x1, y1 = faces[0].box
    margin = 1.5 * (x1 - x0)
    assert np.all(points[:, 0] > x0 - margin) and np.all(points[:, 0] < x1 + margin)
    assert np.all(points[:, 1] > y0 - margin) and np.all(points[:, 1] < y1 + margin)
    refit = detector.fit(astronaut_image, faces[0].box)
    np.testing.assert_allclose(refit, points, atol=1e-3)

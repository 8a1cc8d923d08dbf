"""The face-alignment (FAN) landmark backend, for users who have its weights.

face-alignment downloads its weights on first use; vcam never downloads anything, so the
weights must already sit in torch's hub cache (``$TORCH_HOME/hub/checkpoints``). Faces are
found with dlib's HOG detector (offline) and FAN fits the 68 points in the same iBUG order.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from vcam.errors import UserError
from vcam.landmarks.face import Box, Face, check_image, largest_first, widen_box

# HOG boxes are tighter than the S3FD boxes FAN was trained with; widen them around their centre.
HOG_TO_FAN_BOX = 1.25


def fan_weights_path() -> Path:
    """Where face-alignment looks for its 2D FAN weights."""
    import face_alignment.api
    import torch

    url = face_alignment.api.models_urls["2DFAN-4"]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


class FanDetector:
    """FAN landmarks on dlib HOG boxes."""

    name = "face-alignment"

    def __init__(self, device: str = "cpu") -> None:
        weights = fan_weights_path()
        if not weights.is_file():
            raise UserError(f"face-alignment weights not found: put {weights.name} into "
                            f"{weights.parent} (or use --landmarks dlib)")
        import face_alignment

        from vcam.landmarks.dlib_backend import DlibDetector
        from vcam.landmarks.models import model_file

        self._boxes = DlibDetector()
        detector_options = {"path_to_detector": str(model_file("mmod_human_face_detector.dat"))}
        with warnings.catch_warnings():  # its dlib detector warns that it is deprecated
            warnings.simplefilter("ignore")
            self._fan = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=device, flip_input=False,
                face_detector="dlib", face_detector_kwargs=detector_options, compile=False)

    def detect(self, image: np.ndarray, near: Box | None = None) -> list[Face]:
        image = check_image(image)
        return largest_first([Face(self.fit(image, box), box, score)
                              for box, score in self._boxes.find_boxes(image, near)])

    def fit(self, image: np.ndarray, box: Box) -> np.ndarray:
        fan_box = np.array(widen_box(box, HOG_TO_FAN_BOX), np.float64)  # float32 trips FAN
        result = self._fan.get_landmarks_from_image(image, detected_faces=[fan_box])
        return np.asarray(result[0][:, :2], np.float32)

"""Where the offline model files shipped by `face-recognition-models` live.

That package cannot be imported without ``pkg_resources``, so its folder is found with
``importlib.util.find_spec`` instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vcam.errors import UserError

PACKAGE = "face_recognition_models"


def model_file(name: str) -> Path:
    """Path of one model file (e.g. ``shape_predictor_68_face_landmarks.dat``)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the face-recognition-models package is missing: "
                        "run `pip install face-recognition-models`")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall with "
                        "`pip install --force-reinstall face-recognition-models`")
    return path

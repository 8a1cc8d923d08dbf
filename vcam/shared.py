"""The shared folder beside the repository (``../shared``): the talking-head corpus and
pretrained weights that do not ship with vcam.

Environment variables say where they are (``VCAM_SHARED_DATA``, ``VCAM_SHARED_WEIGHTS``);
without them the defaults lie beside the repository, never relative to the working
directory.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA_ENV_VAR = "VCAM_SHARED_DATA"
SHARED_WEIGHTS_ENV_VAR = "VCAM_SHARED_WEIGHTS"


def repository_root() -> Path:
    """The folder that holds the ``vcam`` package (the repository in a checkout)."""
    return Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``$VCAM_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get(SHARED_DATA_ENV_VAR)
                or repository_root().parent / "shared" / "data")


def shared_weights_dir() -> Path:
    """``$VCAM_SHARED_WEIGHTS``, else ``../shared/weights`` beside the repository."""
    return Path(os.environ.get(SHARED_WEIGHTS_ENV_VAR)
                or repository_root().parent / "shared" / "weights")

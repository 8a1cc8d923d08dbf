"""The iBUG 300-W 68-point layout: which landmark indices make which part of a face.

Every package needs it (the synthetic faces here, and vcam's rasteriser, retargeting, demo
animation and metrics), and ``calibration`` is the layer everything else may import, so the
layout lives here, once. "Right" and "left" are the subject's.
"""

from __future__ import annotations

import numpy as np


def indices(*values: int) -> np.ndarray:
    """A read-only index array (a tuple would index numpy arrays along several axes)."""
    array = np.array(values, np.intp)
    array.flags.writeable = False
    return array


NUM_LANDMARKS = 68

# The nine polylines of the landmark image, in order.
JAW = slice(0, 17)
RIGHT_BROW = slice(17, 22)
LEFT_BROW = slice(22, 27)
NOSE_BRIDGE = slice(27, 31)
NOSE_BASE = slice(31, 36)
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
OUTER_LIP = slice(48, 60)
INNER_LIP = slice(60, 68)

BROWS = slice(17, 27)
NOSE = slice(27, 36)
# Jaw, brows, nose and eyes: every point that moves with the head but not with the mouth.
ABOVE_MOUTH = slice(0, 48)

CHIN = 8
NOSE_TIP = 30
# Outer eye corners (right, then left): their distance is the inter-ocular distance.
OUTER_EYE_CORNERS = indices(36, 45)
# Each eye's corners (right eye 36, 39; left eye 42, 45).
RIGHT_EYE_CORNERS = indices(36, 39)
LEFT_EYE_CORNERS = indices(42, 45)
# Eyelids: the upper lid points of both eyes, and the lower ones below them in the same order.
UPPER_LIDS = indices(37, 38, 43, 44)
LOWER_LIDS = indices(41, 40, 47, 46)
# Upper and lower lip (outer then inner points); the inner lip's upper points above the
# lower ones in the same order.
UPPER_LIP = indices(49, 50, 51, 52, 53, 61, 62, 63)
LOWER_LIP = indices(55, 56, 57, 58, 59, 65, 66, 67)
UPPER_INNER_LIP = indices(61, 62, 63)
LOWER_INNER_LIP = indices(67, 66, 65)
MOUTH_CORNERS = indices(48, 54, 60, 64)
# Points that keep their place on the skull whatever the expression (jaw ends at the ears,
# nose, eye corners): what a head pose is fitted to.
RIGID_POINTS = indices(0, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)

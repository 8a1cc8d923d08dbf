"""The default, fully offline landmark backend: dlib's HOG face detector and its 68-point
shape predictor (from face-recognition-models)."""

from __future__ import annotations

import cv2
import dlib
import numpy as np

from vcam.landmarks.face import NUM_LANDMARKS, Box, Face, check_image, largest_first
from vcam.landmarks.models import model_file

SHAPE_PREDICTOR = "shape_predictor_68_face_landmarks.dat"
# HOG finds faces from 80 px up; a face re-detected near its last box is scaled to this size.
NEAR_FACE_SIZE = 80
# The region searched around a tracked box reaches this many box sides from its centre.
NEAR_REACH = 1.25


class DlibDetector:
    """HOG detection on a downscaled copy of the frame, landmarks at full resolution.

    Detection runs in passes until one finds a face: first with the longer side at most
    ``max_detect_side`` pixels, then at full resolution (upsampled once for small images, so
    faces down to about 40 px are found).
    """

    name = "dlib"

    def __init__(self, max_detect_side: int = 640) -> None:
        self.max_detect_side = max_detect_side
        self._hog = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model_file(SHAPE_PREDICTOR)))

    def detect(self, image: np.ndarray, near: Box | None = None) -> list[Face]:
        image = check_image(image)
        return largest_first([Face(self.fit(image, box), box, score)
                              for box, score in self.find_boxes(image, near)])

    def find_boxes(self, image: np.ndarray, near: Box | None = None) -> list[tuple[Box, float]]:
        """Face boxes and scores in the whole frame, or only around the box ``near``."""
        if near is not None:
            return self.boxes_near(image, near)
        for scale, upsample in self.detection_passes(image.shape[:2]):
            boxes = self.detect_boxes(image, scale, upsample)
            if boxes:
                return boxes
        return []

    def boxes_near(self, image: np.ndarray, near: Box) -> list[tuple[Box, float]]:
        """Detection in a region around ``near``, rescaled so the face is about
        NEAR_FACE_SIZE px: a constant, small cost whatever the frame's resolution."""
        side = max(near[2] - near[0], near[3] - near[1], 1.0)
        reach = NEAR_REACH * side
        centre_x, centre_y = (near[0] + near[2]) / 2, (near[1] + near[3]) / 2
        left, top = max(0, int(centre_x - reach)), max(0, int(centre_y - reach))
        right = min(image.shape[1], int(centre_x + reach) + 1)
        bottom = min(image.shape[0], int(centre_y + reach) + 1)
        if right - left < 8 or bottom - top < 8:
            return []
        region = image[top:bottom, left:right]
        boxes = self.detect_boxes(region, NEAR_FACE_SIZE / side, 0)
        return [((x0 + left, y0 + top, x1 + left, y1 + top), score)
                for (x0, y0, x1, y1), score in boxes]

    def detect_boxes(self, image: np.ndarray, scale: float = 1.0,
                     upsample: int = 0) -> list[tuple[Box, float]]:
        """HOG boxes (in full-resolution coordinates) and scores, at one scale."""
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = image if scale == 1.0 else cv2.resize(
            image, None, fx=scale, fy=scale, interpolation=interpolation)
        rects, scores, _ = self._hog.run(grey(small), upsample, 0.0)
        return [((r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale),
                 float(s)) for r, s in zip(rects, scores)]

    def fit(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Landmarks inside ``box``; only a region around the box is handed to dlib, which
        copies and converts whatever image it gets."""
        x0, y0, x1, y1 = (round(v) for v in box)
        pad = max(x1 - x0, y1 - y0)
        left, top = max(0, x0 - pad), max(0, y0 - pad)
        region = grey(image[top:max(top + 1, y1 + pad), left:max(left + 1, x1 + pad)])
        shape = self._predictor(region, dlib.rectangle(x0 - left, y0 - top,
                                                       x1 - left, y1 - top))
        points = np.empty((NUM_LANDMARKS, 2), np.float32)
        for index, part in enumerate(shape.parts()):
            points[index] = part.x + left, part.y + top
        return points

    def detection_passes(self, shape: tuple[int, int]) -> list[tuple[float, int]]:
        longest = max(shape)
        if longest > self.max_detect_side:
            return [(self.max_detect_side / longest, 0), (1.0, 0)]
        return [(1.0, 0), (1.0, 1)]


def grey(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))

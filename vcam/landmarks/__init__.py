"""Face landmarks: detectors, tracking, smoothing, alignment and the landmark image."""

from vcam.landmarks.align import CropTransform, crop_face, crop_transform_for, paste_back
from vcam.landmarks.detector import LandmarkDetector, create_detector
from vcam.landmarks.face import Face
from vcam.landmarks.raster import rasterise
from vcam.landmarks.tracker import FaceTracker, OneEuroFilter, TrackerSettings

__all__ = [
    "CropTransform",
    "Face",
    "FaceTracker",
    "LandmarkDetector",
    "OneEuroFilter",
    "TrackerSettings",
    "create_detector",
    "crop_face",
    "crop_transform_for",
    "paste_back",
    "rasterise",
]

"""Evaluation: self-reenactment metrics, the warping baseline and the report."""

from vcam.eval.metrics import (
    PSNR_CAP_DB,
    FaceDescriptor,
    IdentityScorer,
    Redetection,
    clip_means,
    mouth_opening_error,
    overall_means,
    pose_error,
    psnr,
    redetect_landmarks,
    ssim,
    temporal_flicker,
)
from vcam.eval.motion import motion_label

__all__ = [
    "PSNR_CAP_DB",
    "FaceDescriptor",
    "IdentityScorer",
    "Redetection",
    "clip_means",
    "motion_label",
    "mouth_opening_error",
    "overall_means",
    "pose_error",
    "psnr",
    "redetect_landmarks",
    "ssim",
    "temporal_flicker",
]

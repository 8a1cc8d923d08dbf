import cv2
import numpy as np
import pytest

from vcam.errors import UserError
from vcam.landmarks.detector import create_detector
from vcam.landmarks.face import check_image


def group_centre_y(points, start, stop):
    return float(points[start:stop, 1].mean())


def test_astronaut_landmarks_are_plausible(dlib_detector, astronaut_image):
    faces = dlib_detector.detect(astronaut_image)
    assert len(faces) == 1
    face = faces[0]
    assert face.points.shape == (68, 2) and face.points.dtype == np.float32
    x0, y0, x1, y1 = face.box
    width, height = x1 - x0, y1 - y0
    assert 60 < width < 140  # the face is about 90 px wide in the 512 px photo
    # Every point lies in the box, grown by a third (the jaw and chin reach below it).
    assert np.all(face.points[:, 0] > x0 - width / 3) and np.all(face.points[:, 0] < x1 + width / 3)
    assert np.all(face.points[:, 1] > y0 - height / 3)
    assert np.all(face.points[:, 1] < y1 + height / 3)
    brows = group_centre_y(face.points, 17, 27)
    eyes = group_centre_y(face.points, 36, 48)
    nose_tip = float(face.points[30, 1])
    mouth = group_centre_y(face.points, 48, 68)
    chin = float(face.points[8, 1])
    assert brows < eyes < nose_tip < mouth < chin
    # iBUG order: the jaw runs from the face's right (image left) to its left.
    assert face.points[0, 0] < face.points[8, 0] < face.points[16, 0]
    assert face.points[36, 0] < face.points[45, 0]
    assert face.score > 0


def test_no_face_gives_an_empty_list(dlib_detector):
    rng = np.random.default_rng(0)
    assert dlib_detector.detect(np.zeros((240, 320, 3), np.uint8)) == []
    assert dlib_detector.detect(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) == []


def test_small_face_in_a_large_frame_is_found(dlib_detector, astronaut_image):
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    frame[500:1012, 1300:1812] = astronaut_image  # a 90 px face: 30 px in the first pass
    faces = dlib_detector.detect(frame)
    assert len(faces) == 1
    assert 1300 < faces[0].points[:, 0].mean() < 1812
    assert 500 < faces[0].points[:, 1].mean() < 1012


def test_detection_near_a_box_finds_the_same_face(dlib_detector, astronaut_image):
    face = dlib_detector.detect(astronaut_image)[0]
    near = dlib_detector.detect(astronaut_image, near=face.box)
    assert len(near) == 1
    assert np.abs(near[0].points - face.points).mean() < 3
    blank = np.zeros_like(astronaut_image)
    assert dlib_detector.detect(blank, near=face.box) == []


def test_largest_face_comes_first(dlib_detector, astronaut_image):
    frame = np.full((400, 640, 3), 128, np.uint8)
    frame[20:280, 20:280] = astronaut_image[0:260, 100:360]  # a 90 px face
    larger = cv2.resize(astronaut_image, None, fx=1.4, fy=1.4)
    frame[20:380, 300:630] = larger[0:360, 150:480]  # a 126 px face
    faces = dlib_detector.detect(frame)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].points[:, 0].mean() > 300 > faces[1].points[:, 0].mean()


def test_bad_images_and_backends_are_refused():
    with pytest.raises(ValueError, match="RGB uint8"):
        check_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        check_image(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(UserError, match="unknown landmark backend"):
        create_detector("magic")

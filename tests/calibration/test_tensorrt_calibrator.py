import numpy as np
import pytest
import torch

from calibration.tensorrt_calibrator import EntropyCalibrator, tensorrt_available


def images(count: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (count, 3, 8, 8)).astype(np.float32)


def test_batches_land_in_the_buffer_and_run_out(tmp_path):
    data = images(5)
    calibrator = EntropyCalibrator(data, tmp_path / "table.calib", batch_size=2, device="cpu")
    assert calibrator.get_batch_size() == 2
    pointer = calibrator.get_batch(["landmarks"])
    assert pointer == [calibrator.buffer.data_ptr()]
    np.testing.assert_array_equal(calibrator.buffer.numpy(), data[:2])
    calibrator.get_batch(["landmarks"])
    np.testing.assert_array_equal(calibrator.buffer.numpy(), data[2:4])
    assert calibrator.get_batch(["landmarks"]) is None  # the odd fifth image is left out


def test_calibration_table_round_trips_through_the_cache_file(tmp_path):
    cache = tmp_path / "sub" / "table.calib"
    calibrator = EntropyCalibrator(images(1), cache, device="cpu")
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(memoryview(b"TRT-table"))
    assert calibrator.read_calibration_cache() == b"TRT-table"
    assert sorted(path.name for path in cache.parent.iterdir()) == ["table.calib"]


def test_too_few_images_for_a_batch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="cannot fill"):
        EntropyCalibrator(images(1), tmp_path / "t.calib", batch_size=2, device="cpu")


@pytest.mark.tensorrt
@pytest.mark.skipif(not tensorrt_available() or not torch.cuda.is_available(),
                    reason="needs TensorRT and a CUDA GPU")
def test_is_a_real_entropy_calibrator_on_the_gpu(tmp_path):
    import tensorrt as trt

    calibrator = EntropyCalibrator(images(2), tmp_path / "t.calib")
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    assert calibrator.buffer.is_cuda
    assert calibrator.get_batch(["landmarks"]) == [calibrator.buffer.data_ptr()]

"""Running a personalised generator: ONNX export, backends and the engine cache.

* :mod:`engines.backend`: the :class:`~engines.backend.Backend` protocol, frozen
  :class:`~engines.backend.BackendOptions`, :class:`~engines.backend.GeneratorSource` and
  :func:`~engines.backend.create_backend` (``auto``, ``torch``, ``onnxruntime``,
  ``tensorrt``), which raises one :class:`~engines.backend.NoBackendError` listing every
  backend's reason when none can run.
* :mod:`engines.torch_backend`, :mod:`engines.onnxruntime_backend`,
  :mod:`engines.tensorrt_backend`: one module per engine, imported only when chosen.
* :mod:`engines.export`: torch -> ONNX (FP32, FP16 or QDQ INT8), checked against torch and
  refused on a mismatch; :func:`~engines.export.verify_backend` checks the next step.
* :mod:`engines.cache`: TensorRT engines keyed by model, TensorRT version, GPU and precision.
* :mod:`engines.benchmark`, :mod:`engines.metrics`: INT8 vs FP32 and backend latency, PSNR.

This package never imports ``vcam`` (see ../shared/docs/DESIGN.md); it may import ``calibration``.
"""

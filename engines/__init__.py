"""Running a personalised generator: ONNX export, backends and the engine cache.

This package never imports ``vcam`` (see DESIGN.md).
"""

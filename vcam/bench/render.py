"""`vcam bench render`: median and p95 ms per frame at batch 1 for each available backend
and precision, with a freshly initialised personalised generator of the chosen config (speed
does not depend on what the weights have learned)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from calibration.sets import CalibrationSetSpec, landmark_images, neutral_face, sweep_landmarks
from engines.backend import BackendOptions, GeneratorSource, NoBackendError, create_backend
from engines.benchmark import (
    Int8Inputs,
    TimingSettings,
    benchmark_backends,
    compare_int8_with_fp32,
)
from engines.export import ExportOptions, Tolerance, export_onnx
from vcam.landmarks.raster import rasterise
from vcam.models.config import get_config
from vcam.models.generator import Generator, PersonalisedGenerator


def bench_inputs(size: int, channels: int, count: int = 16) -> np.ndarray:
    images = landmark_images(sweep_landmarks(neutral_face(size),
                                             CalibrationSetSpec(size=size, count=count)),
                             size, rasterise)
    if channels == 3:
        return images
    return np.concatenate([images, images], axis=1)  # a stand-in for the warped image


def random_generator(config_name: str, generator_kind: str) -> PersonalisedGenerator:
    config = dataclasses.replace(get_config(config_name), generator=generator_kind)
    torch.manual_seed(0)
    generator = Generator(config)
    psi = torch.randn(1, generator.adain_param_count) * 0.1
    return PersonalisedGenerator(generator, psi).deployable()


def load_backends(source: GeneratorSource, threads: int | None,
                  wanted: tuple[str, ...]) -> tuple[dict, dict[str, str]]:
    """Every wanted (backend, device, precision) that loads here, and why the others don't."""
    combinations = [("torch", "cpu", "fp32"), ("onnxruntime", "cpu", "fp32"),
                    ("torch", "cuda", "fp32"), ("torch", "cuda", "fp16"),
                    ("tensorrt", "cuda", "fp16"), ("tensorrt", "cuda", "fp32")]
    loaded, skipped = {}, {}
    for name, device, precision in combinations:
        if name not in wanted:
            continue
        label = f"{name} {device} {precision}"
        options = BackendOptions(device=device, precision=precision, threads=threads)
        try:
            backend = create_backend(name, source, options)
            backend.warm_up()
            loaded[label] = backend
        except NoBackendError as error:
            skipped[label] = "; ".join(error.reasons.values())
    return loaded, skipped


def run_render_bench(config_name: str = "cpu", generator_kind: str = "direct",
                     backends: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt"),
                     threads: int | None = None, int8: bool = True,
                     timing: TimingSettings | None = None) -> dict:
    timing = timing or TimingSettings()
    module = random_generator(config_name, generator_kind)
    size = module.generator.config.image_size
    channels = module.generator.config.generator_input_channels
    images = bench_inputs(size, channels)
    with tempfile.TemporaryDirectory(prefix="vcam-render-") as scratch:
        # Random weights of a deep config can drift past the 1e-3 export limit; the bench
        # measures speed, so it reports the difference instead of refusing.
        exported = export_onnx(module, Path(scratch) / "fp32.onnx", images[:4],
                               ExportOptions(threads=threads, tolerance=Tolerance(min_psnr_db=30)))
        fp32 = exported.path
        source = GeneratorSource(size, module=module, onnx_path=fp32, input_channels=channels)
        loaded, skipped = load_backends(source, threads, backends)
        latency = benchmark_backends(loaded, images[:1], timing)
        for backend in loaded.values():
            backend.close()
        report = {"config": config_name, "generator": generator_kind, "image_size": size,
                  "onnx_max_abs_diff": exported.fp32_report.max_abs_diff,
                  "threads": threads or torch.get_num_threads(),
                  "backends": {name: dataclasses.asdict(stats)
                               for name, stats in latency.items()},
                  "unavailable": skipped}
        if int8 and "onnxruntime" in backends:
            quantised = export_onnx(module, Path(scratch) / "int8.onnx", images[:4],
                                    ExportOptions(precision="int8", threads=threads), images)
            comparison = compare_int8_with_fp32(fp32, images, Int8Inputs(int8_path=quantised.path),
                                                threads=threads, timing=timing).to_dict()
            comparison["float_leading_fraction"] = quantised.float_leading_fraction
            report["onnxruntime_int8_vs_fp32"] = comparison
    return report


def render_report_lines(report: dict) -> list[str]:
    lines = [f"render, {report['config']} config ({report['generator']} generator), "
             f"{report['image_size']} px, batch 1, {report['threads']} threads (ONNX vs torch "
             f"max abs diff {report['onnx_max_abs_diff']:.1e})"]
    for name, stats in report["backends"].items():
        lines.append(f"  {name:<22} median {stats['median_ms']:7.2f} ms  p95 "
                     f"{stats['p95_ms']:7.2f} ms  ({1000 / stats['median_ms']:.0f} frames/s)")
    int8 = report.get("onnxruntime_int8_vs_fp32")
    if int8:
        lines.append(f"  onnxruntime cpu int8   median {int8['int8']['median_ms']:7.2f} ms  "
                     f"p95 {int8['int8']['p95_ms']:7.2f} ms  (PSNR vs FP32 "
                     f"{int8['psnr_db']:.1f} dB; FP32 {int8['fp32']['median_ms']:.2f} ms)")
    for name, reason in report["unavailable"].items():
        lines.append(f"  {name:<22} unavailable: {reason[:110]}")
    return lines

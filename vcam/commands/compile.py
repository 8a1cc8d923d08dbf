"""`vcam compile`: an avatar's generator -> ONNX (checked against torch) -> TensorRT."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from vcam.commands.arguments import positive_int

SUMMARY = ("Export an avatar's generator to ONNX (checked against torch) and build its "
           "TensorRT engine.")
DESCRIPTION = SUMMARY


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("avatar", help="avatar name or bundle path")
    command.add_argument("--backend", choices=("onnx", "tensorrt"), default="onnx")
    command.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    command.add_argument("--out", type=Path, help="ONNX file to write (default: the avatar's "
                         "compiled folder, where the runtime finds it)")
    command.add_argument("--threads", type=positive_int, help="CPU threads for the checks")
    command.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from vcam.avatar import load_avatar, resolve_avatar
    from vcam.compiled import build_tensorrt_engine, export_avatar

    avatar = load_avatar(resolve_avatar(args.avatar))
    onnx_precision = "fp32" if args.backend == "tensorrt" and args.precision == "fp16" \
        else args.precision
    result = export_avatar(avatar, onnx_precision, args.out, args.threads)
    report = {"avatar": avatar.name, "onnx": str(result.path), "precision": onnx_precision,
              "max_abs_diff_fp32": result.fp32_report.max_abs_diff,
              "check": dataclasses.asdict(result.report)}
    if args.backend == "tensorrt":
        report["tensorrt"] = build_tensorrt_engine(avatar, result.path, args.precision)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return 0
    print(f"{avatar.name}: ONNX {onnx_precision} written to {result.path}; against torch "
          f"max abs diff {result.fp32_report.max_abs_diff:.2e} (FP32 graph)"
          + (f", PSNR {result.report.psnr_db:.1f} dB ({onnx_precision})"
             if onnx_precision != "fp32" else ""))
    if "tensorrt" in report:
        print(f"TensorRT {args.precision} engine: {report['tensorrt']['engine']}")
    return 0

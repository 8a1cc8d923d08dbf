"""`vcam bench ...`: the benchmarks (``vcam.bench``), their options and printed figures."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from vcam.commands.arguments import positive_int
from vcam.commands.options import add_backend_option, add_vgg_option
from vcam.commands.train import (
    add_cost_options,
    add_situation_options,
    fraction,
    loss_weights,
)

SUMMARY = "Measure speed and print the figures."
DESCRIPTION = SUMMARY


def add_arguments(command: argparse.ArgumentParser) -> None:
    benches = command.add_subparsers(title="benchmarks", metavar="BENCH", dest="bench",
                                     required=True)
    landmarks = benches.add_parser(
        "landmarks", help="landmark ms per 640x480 frame (detected vs tracked) and "
        "preprocessing frames/s")
    landmarks.add_argument("--backend", choices=("dlib", "face-alignment"), default="dlib")
    landmarks.add_argument("--frames", type=positive_int, default=150)
    landmarks.add_argument("--data", type=Path,
                           help="clips for the preprocessing figure (default: clips/ of the "
                           "shared corpus, $VCAM_SHARED_DATA or ../shared/data beside the "
                           "repository; synthetic clips when absent)")
    landmarks.add_argument("--clips", type=positive_int, default=12)
    landmarks.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)
    landmarks.add_argument("--json", action="store_true")
    add_train_bench(benches)
    add_enroll_bench(benches)
    add_render_bench(benches)
    add_codec_bench(benches)
    add_pipeline_bench(benches)
    add_soak_bench(benches)


def add_soak_bench(benches) -> None:
    command = benches.add_parser("soak", help="the pipeline (demo input -> mp4) run for "
                                 "minutes: resident memory and frames/s each minute")
    command.add_argument("--minutes", type=positive_int, default=10)
    command.add_argument("--model", type=Path, help="a trained model (default: the shipped one)")
    add_backend_option(command, "inference engine (default: the fastest available)")
    command.add_argument("--threads", type=positive_int)
    command.add_argument("--json", action="store_true")


def run_soak_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.soak import run_soak, soak_lines

    report = run_soak(args.minutes, args.model, args.backend, args.threads)
    print(json.dumps(report, indent=1) if args.json else "\n".join(soak_lines(report)))
    return 0


def add_train_bench(benches) -> None:
    train = benches.add_parser("train", help="seconds per meta-learning step and peak memory")
    train.add_argument("--config", choices=("tiny", "cpu", "paper"), default="cpu")
    train.add_argument("--steps", type=positive_int, default=5)
    train.add_argument("--batch", type=positive_int, default=2)
    train.add_argument("--shots", type=positive_int, default=8)
    add_vgg_option(train)
    train.add_argument("--no-identity-loss", action="store_true")
    train.add_argument("--generator", choices=("direct", "warp"), default="direct")
    train.add_argument("--loss-weights", default="", help="as for `vcam train meta`")
    add_situation_options(train)
    add_cost_options(train)
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train.add_argument("--data", type=Path, help="a `vcam preprocess` folder (default: "
                       "synthetic clips)")
    train.add_argument("--json", action="store_true")


def add_enroll_bench(benches) -> None:
    command = benches.add_parser("enroll", help="seconds to enroll one photo feed-forward "
                                 "and to fine-tune for N steps")
    command.add_argument("--config", choices=("tiny", "cpu", "paper"), default="cpu")
    command.add_argument("--steps", type=positive_int, default=100)
    add_vgg_option(command)
    command.add_argument("--json", action="store_true")


def run_enroll_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.enroll import run_enroll_bench
    from vcam.models.vgg import vgg_weights_setting

    report = run_enroll_bench(args.config, args.steps, vgg_weights_setting(args.vgg))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"enroll, {report['config']} config, {report['threads']} threads:")
    print(f"  feed-forward, one photo: {report['feed_forward_seconds']:.2f} s "
          f"(+ {report['model_load_seconds']:.2f} s loading the model)")
    print(f"  fine-tuning {report['finetune_steps']} steps: {report['finetune_seconds']:.1f} s "
          f"({report['finetune_seconds_per_step']:.2f} s per step)")
    return 0


def add_render_bench(benches) -> None:
    command = benches.add_parser("render", help="ms per frame of the personalised generator "
                                 "on every available backend and precision")
    command.add_argument("--config", choices=("tiny", "cpu", "paper"), default="cpu")
    command.add_argument("--generator", choices=("direct", "warp"), default="direct")
    add_backend_option(command, "the engines to time (default: all three)",
                       default=["torch", "onnxruntime", "tensorrt"], several=True)
    command.add_argument("--threads", type=positive_int)
    command.add_argument("--no-int8", action="store_true", help="skip the INT8 comparison")
    command.add_argument("--repeats", type=positive_int, default=20)
    command.add_argument("--json", action="store_true")


def run_render_bench_command(args: argparse.Namespace) -> int:
    from engines.benchmark import TimingSettings
    from vcam.bench.render import render_report_lines, run_render_bench

    report = run_render_bench(args.config, args.generator, tuple(args.backend), args.threads,
                              not args.no_int8, TimingSettings(repeats=args.repeats))
    print(json.dumps(report, indent=1) if args.json else "\n".join(render_report_lines(report)))
    return 0


def add_pipeline_bench(benches) -> None:
    command = benches.add_parser("pipeline", help="frames/s and capture-to-sink latency of "
                                 "the real-time pipeline, 640x480 clip -> file sink")
    command.add_argument("--config", choices=("tiny", "cpu", "paper"), default="cpu",
                         help="architecture of the random model used without --model")
    command.add_argument("--generator", choices=("direct", "warp"), default="direct",
                         help="generator variant of the random model used without --model")
    command.add_argument("--model", type=Path,
                         help="a trained model (e.g. vcam/weights/default.safetensors)")
    command.add_argument("--frames", type=positive_int, default=150,
                         help="frames per run (at most this many of --clip)")
    command.add_argument("--clip", type=Path,
                         help="a video to drive the avatar instead of the synthetic astronaut "
                         "(e.g. a recording of yourself talking: an opening mouth makes a "
                         "warp-guided avatar run its network); scaled down to fit 640x480")
    add_backend_option(command, "inference engine (default: the fastest available)")
    command.add_argument("--threads", type=positive_int)
    command.add_argument("--layout", choices=("paste", "tile"), default="paste",
                         help="as `vcam run --layout` (default: paste-back into the photo)")
    command.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                         help="ONNX Runtime model (int8: quantised, exported once)")
    command.add_argument("--json", action="store_true")


def run_pipeline_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.pipeline import pipeline_bench_lines, run_pipeline_bench

    report = run_pipeline_bench(args.config, args.frames, args.backend, args.threads,
                                generator=args.generator, model=args.model,
                                layout=args.layout, precision=args.precision,
                                clip=args.clip)
    print(json.dumps(report, indent=1) if args.json else "\n".join(pipeline_bench_lines(report)))
    return 0


def add_codec_bench(benches) -> None:
    command = benches.add_parser("codec", help="kbit/s and error of the landmark stream "
                                 "against H.264 of the same crops")
    command.add_argument("--data", type=Path, required=True,
                         help="a `vcam preprocess` folder (256 px crops)")
    command.add_argument("--max-clips", type=positive_int, default=20)
    command.add_argument("--json", action="store_true")


def run_codec_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.codec import codec_report_lines, run_codec_bench
    from vcam.data.clips import open_dataset

    clips = list(open_dataset(args.data).clips)
    clips = clips[::max(1, len(clips) // args.max_clips)][:args.max_clips]
    report = run_codec_bench(clips)
    print(json.dumps(report, indent=1) if args.json else "\n".join(codec_report_lines(report)))
    return 0


def run_train_bench_command(args: argparse.Namespace) -> int:
    import torch

    from vcam.bench.train import run_train_bench
    from vcam.models.vgg import vgg_weights_setting
    from vcam.train.meta import MetaSettings

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = MetaSettings(shots=args.shots, batch=args.batch,
                            vgg_weights=vgg_weights_setting(args.vgg),
                            identity_loss=not args.no_identity_loss,
                            episodes=args.episodes, identity_every=args.identity_every,
                            losses=loss_weights(args.loss_weights, args.episodes),
                            vgg_size=args.vgg_size,
                            discriminator_every=args.discriminator_every,
                            cross_clip=fraction("--cross-clip", args.cross_clip),
                            hard_targets=fraction("--hard-targets", args.hard_targets))
    report = run_train_bench(args.config, args.steps, settings, device, args.data,
                             args.generator)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"train meta, {report['config']} config on {report['device']}: batch "
          f"{report['batch']}, K={report['shots']}, VGG loss {report['vgg_loss']}, "
          f"identity loss {report['identity_loss']}")
    print(f"  {report['seconds_per_step_median']:.2f} s per step (median of "
          f"{report['steps']}), {report['seconds_per_sample']:.2f} s per training sample "
          f"(+{report['draw_seconds_per_sample']:.2f} s drawing it, {report['episodes']} "
          f"episodes, {report['generator']} generator), peak memory "
          f"{report['peak_rss_mb']:.0f} MB resident"
          + (f", {report['peak_cuda_mb']:.0f} MB CUDA" if "peak_cuda_mb" in report else ""))
    return 0


def run_landmark_bench_command(args: argparse.Namespace) -> int:
    from vcam.bench.landmarks import run_landmark_bench
    from vcam.shared import shared_data_dir

    clips = args.data or shared_data_dir() / "clips"
    report = run_landmark_bench(args.backend, args.frames, clips, args.clips, args.workers)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    frame, pre = report["per_frame"], report["preprocess"]
    print(f"landmarks ({frame['backend']}, {frame['frame_size']}, {frame['frames']} frames)")
    for mode in ("detect_every_frame", "tracked"):
        row = frame[mode]
        print(f"  {mode:<19} mean {row['mean_ms']:6.2f} ms  median {row['median_ms']:6.2f} ms"
              f"  p95 {row['p95_ms']:6.2f} ms  faces {row['faces_found']}/{frame['frames']}")
    print(f"  tracked ran {frame['tracked']['detections']} detections")
    print(f"preprocess ({pre['source']}, {pre['clips']} clips, {pre['workers']} workers): "
          f"{pre['frames_per_second']:.1f} frames/s, {pre['frames_kept']} kept, "
          f"{pre['frames_dropped']} dropped in {pre['seconds']:.1f} s")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the benchmark asked for (``args.bench``)."""
    benches = {"landmarks": run_landmark_bench_command, "train": run_train_bench_command,
               "enroll": run_enroll_bench_command, "render": run_render_bench_command,
               "codec": run_codec_bench_command, "pipeline": run_pipeline_bench_command,
               "soak": run_soak_bench_command}
    return benches[args.bench](args)

"""`vcam bench pipeline` runs end to end (tiny config, a few frames: figures are printed,
not asserted)."""

from __future__ import annotations

import dataclasses

from vcam.bench.pipeline import pipeline_bench_lines, run_pipeline_bench


def test_pipeline_bench_reports_throughput_latency_and_stage_times():
    report = run_pipeline_bench("tiny", frames=8, backend="torch", threads=1,
                                output_size=(320, 240))
    for mode in ("file", "live"):
        run = report[mode]
        assert run["frames_captured"] == 8
        assert run["frames_per_second"] > 0
        assert 0 < run["latency_median_ms"] <= run["latency_p95_ms"]
        assert set(run["stage_ms"]) == {"capture", "landmarks", "render", "output"}
    assert report["file"]["frames_output"] == 8 and report["file"]["dropped"] == 0
    lines = pipeline_bench_lines(report)
    print("\n".join(lines))
    assert any("frames/s" in line for line in lines)


def test_pipeline_bench_runs_a_given_warp_guided_model(tiny_dataset, tmp_path):
    from tests.conftest import fast_settings
    from vcam.models.config import get_config
    from vcam.train.run import run_meta_training

    run = tmp_path / "run"
    config = dataclasses.replace(get_config("tiny"), generator="warp")
    run_meta_training(tiny_dataset, run, config, fast_settings(steps=1), quiet=True)
    report = run_pipeline_bench(frames=6, backend="onnxruntime", threads=1,
                                output_size=(320, 240), model=run)
    assert report["generator"] == "warp" and report["config"] == str(run)
    assert report["file"]["frames_output"] == 6

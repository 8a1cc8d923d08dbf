"""`vcam bench pipeline` runs end to end (tiny config, a few frames: figures are printed,
not asserted)."""

from __future__ import annotations

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

"""`vcam bench soak`: samples of memory and frames/s while the pipeline runs on the demo."""

from vcam.bench.soak import run_soak, soak_lines, soak_report


def test_soak_samples_memory_and_frames_each_period(tiny_model, vcam_home):
    report = run_soak(2, model=tiny_model, backend="torch", threads=1,
                      output_size=(320, 240), seconds_per_sample=3.0)
    samples = report["samples"]
    assert [sample["minute"] for sample in samples] == [1, 2]
    assert 0 < samples[0]["frames"] < samples[1]["frames"]
    assert all(sample["frames_per_second"] > 0 and sample["rss_mb"] > 50 for sample in samples)
    assert report["ended_by"] == "stopped" and report["backend"] == "torch"
    lines = soak_lines(report)
    assert lines[1].split() == ["minute", "frames/s", "RSS", "MB", "growth", "%"]
    assert len(lines) == 5 and "memory growth" in lines[-1]


def test_the_soak_verdicts_follow_the_samples():
    steady = soak_report(_samples([(30.0, 500.0), (29.0, 505.0), (31.0, 510.0)]))
    assert steady["meets_memory_goal"] and steady["meets_fps_goal"]
    assert abs(steady["memory_growth_percent"] - 2.0) < 1e-9
    leaking = soak_report(_samples([(30.0, 500.0), (30.0, 560.0)]))
    assert not leaking["meets_memory_goal"] and leaking["meets_fps_goal"]
    slowing = soak_report(_samples([(30.0, 500.0), (20.0, 500.0)]))
    assert not slowing["meets_fps_goal"]


def _samples(figures):
    from vcam.bench.soak import SoakSample

    return [SoakSample(minute, minute * 100, fps, rss)
            for minute, (fps, rss) in enumerate(figures, start=1)]

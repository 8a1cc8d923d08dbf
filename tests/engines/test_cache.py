import dataclasses
import json

import pytest

from engines.cache import CacheOutcome, EngineBuildError, EngineCache, EngineKey

KEY = EngineKey(onnx_sha256="ab" * 32, tensorrt_version="10.3.0", gpu_name="NVIDIA H100",
                compute_capability="9.0", precision="fp16")


class FakeTensorRT:
    """Stands in for the builder and Runtime.deserialize_cuda_engine: an engine is the
    bytes b"ENGINE:<n>"; anything else deserialises to None, as TensorRT does."""

    def __init__(self) -> None:
        self.builds = 0

    def build(self) -> bytes:
        self.builds += 1
        return f"ENGINE:{self.builds}".encode()

    @staticmethod
    def deserialize(serialized: bytes) -> str | None:
        text = serialized.decode(errors="replace")
        return text if text.startswith("ENGINE:") else None


@pytest.mark.parametrize("field", [field.name for field in dataclasses.fields(EngineKey)])
def test_every_key_field_changes_the_digest(field):
    changed = dataclasses.replace(KEY, **{field: getattr(KEY, field) + "x"})
    assert changed.digest() != KEY.digest()
    assert len(KEY.digest()) == 32 and KEY.digest() == dataclasses.replace(KEY).digest()


def test_first_use_builds_then_the_entry_is_reused(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeTensorRT()
    first = cache.load_or_build(KEY, fake.build, fake.deserialize)
    second = cache.load_or_build(KEY, fake.build, fake.deserialize)
    assert (first.outcome, second.outcome) == (CacheOutcome.BUILT, CacheOutcome.HIT)
    assert second.engine == "ENGINE:1" and fake.builds == 1
    assert first.path == tmp_path / f"{KEY.digest()}.engine"
    assert json.loads(cache.meta_path(KEY).read_text()) == KEY.fields()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f"{KEY.digest()}.engine", f"{KEY.digest()}.json"]


def test_another_gpu_gets_its_own_engine(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeTensorRT()
    cache.load_or_build(KEY, fake.build, fake.deserialize)
    other = dataclasses.replace(KEY, gpu_name="NVIDIA L4", compute_capability="8.9")
    result = cache.load_or_build(other, fake.build, fake.deserialize)
    assert result.outcome is CacheOutcome.BUILT and result.engine == "ENGINE:2"


def test_an_entry_whose_key_fields_differ_is_rebuilt(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeTensorRT()
    cache.load_or_build(KEY, fake.build, fake.deserialize)
    stale = {**KEY.fields(), "tensorrt_version": "8.6.1"}
    cache.meta_path(KEY).write_text(json.dumps(stale))
    result = cache.load_or_build(KEY, fake.build, fake.deserialize)
    assert result.outcome is CacheOutcome.REBUILT_STALE and result.engine == "ENGINE:2"
    assert json.loads(cache.meta_path(KEY).read_text()) == KEY.fields()


@pytest.mark.parametrize("damage", [b"", b"ENG", b"\x00garbage"])
def test_a_corrupt_engine_is_rebuilt_not_used(tmp_path, damage):
    cache, fake = EngineCache(tmp_path), FakeTensorRT()
    cache.load_or_build(KEY, fake.build, fake.deserialize)
    cache.engine_path(KEY).write_bytes(damage)
    result = cache.load_or_build(KEY, fake.build, fake.deserialize)
    assert result.outcome is CacheOutcome.REBUILT_CORRUPT and result.engine == "ENGINE:2"
    assert cache.engine_path(KEY).read_bytes() == b"ENGINE:2"


def test_a_deserializer_that_raises_counts_as_corrupt(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeTensorRT()
    cache.load_or_build(KEY, fake.build, fake.deserialize)
    calls = []

    def fragile(serialized: bytes) -> str | None:
        calls.append(serialized)
        if len(calls) == 1:
            raise RuntimeError("engine plan is from another TensorRT")
        return fake.deserialize(serialized)

    result = cache.load_or_build(KEY, fake.build, fragile)
    assert result.outcome is CacheOutcome.REBUILT_CORRUPT and result.engine == "ENGINE:2"


def test_unreadable_metadata_is_rebuilt(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeTensorRT()
    cache.load_or_build(KEY, fake.build, fake.deserialize)
    cache.meta_path(KEY).write_text("{not json")
    assert cache.load_or_build(KEY, fake.build, fake.deserialize).outcome is (
        CacheOutcome.REBUILT_CORRUPT)


def test_a_build_that_cannot_be_read_back_leaves_no_entry(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    with pytest.raises(EngineBuildError):
        cache.load_or_build(KEY, lambda: b"broken", FakeTensorRT.deserialize)
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


def test_a_failing_build_keeps_the_old_entry_out_of_use_and_leaves_no_partial_file(tmp_path):
    cache, fake = EngineCache(tmp_path), FakeTensorRT()
    cache.load_or_build(KEY, fake.build, fake.deserialize)
    cache.engine_path(KEY).write_bytes(b"corrupt")

    def interrupted() -> bytes:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.load_or_build(KEY, interrupted, fake.deserialize)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]
    assert cache.load_or_build(KEY, fake.build, fake.deserialize).engine == "ENGINE:2"

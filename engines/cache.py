"""The TensorRT engine cache: one serialised engine per (model, TensorRT, GPU, precision).

An engine is only valid for the exact ONNX bytes, TensorRT version and GPU it was built for,
so the cache key holds all of them. Each entry is ``<digest>.engine`` beside ``<digest>.json``
with the key fields. An entry is used only when its JSON matches the key field by field and
its bytes deserialise; otherwise it is rebuilt. Files are written beside their destination
and renamed into place, so an interrupted build never leaves a partial engine.

Building and deserialising are passed in (:class:`EngineCache.load_or_build`), which keeps
this module free of TensorRT and testable on any machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Generic, TypeVar

from calibration.files import atomic_write_bytes

CACHE_FORMAT = 1
ENGINE_SUFFIX = ".engine"
META_SUFFIX = ".json"
DIGEST_CHARS = 32

EngineT = TypeVar("EngineT")


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialised TensorRT engine depends on."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    calibration_sha256: str = ""  # the INT8 calibration set, when a calibrator is used

    def fields(self) -> dict[str, str | int]:
        """The key as written to the entry's JSON (with the cache format version)."""
        return {"cache_format": CACHE_FORMAT, **asdict(self)}

    def digest(self) -> str:
        """A file-name-safe hash of :meth:`fields`."""
        canonical = json.dumps(self.fields(), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:DIGEST_CHARS]


class CacheOutcome(Enum):
    """How :meth:`EngineCache.load_or_build` got its engine."""

    HIT = "hit"
    BUILT = "built"  # no entry
    REBUILT_STALE = "rebuilt: key fields differ"
    REBUILT_CORRUPT = "rebuilt: cached engine unreadable"


@dataclass(frozen=True)
class CachedEngine(Generic[EngineT]):
    """A deserialised engine, where it lives and how it was obtained."""

    engine: EngineT
    path: Path
    outcome: CacheOutcome


class EngineBuildError(RuntimeError):
    """A freshly built engine could not be deserialised (or the build produced nothing)."""


class EngineCache:
    """Serialised engines in one folder, keyed by :class:`EngineKey`."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def engine_path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest()}{ENGINE_SUFFIX}"

    def meta_path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest()}{META_SUFFIX}"

    def load_or_build(self, key: EngineKey, build: Callable[[], bytes],
                      deserialize: Callable[[bytes], EngineT | None]) -> CachedEngine[EngineT]:
        """The cached engine for ``key`` when its entry matches and deserialises; otherwise
        ``build()`` new serialised bytes, store them and deserialise those.

        ``deserialize`` returns None (or raises) for bytes it cannot read, as TensorRT's
        ``Runtime.deserialize_cuda_engine`` does.
        """
        outcome = self._entry_state(key)
        if outcome is CacheOutcome.HIT:
            engine = _try_deserialize(deserialize, self.engine_path(key).read_bytes())
            if engine is not None:
                return CachedEngine(engine, self.engine_path(key), CacheOutcome.HIT)
            outcome = CacheOutcome.REBUILT_CORRUPT
        return CachedEngine(self._build_and_store(key, build, deserialize),
                            self.engine_path(key), outcome)

    def _entry_state(self, key: EngineKey) -> CacheOutcome:
        """HIT when the entry's JSON matches ``key``; otherwise why it must be built."""
        engine_file, meta_file = self.engine_path(key), self.meta_path(key)
        if not engine_file.is_file() or not meta_file.is_file():
            return CacheOutcome.BUILT
        try:
            stored = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            return CacheOutcome.REBUILT_CORRUPT
        return CacheOutcome.HIT if stored == key.fields() else CacheOutcome.REBUILT_STALE

    def _build_and_store(self, key: EngineKey, build: Callable[[], bytes],
                         deserialize: Callable[[bytes], EngineT | None]) -> EngineT:
        serialized = bytes(build())
        engine = _try_deserialize(deserialize, serialized) if serialized else None
        if engine is None:
            raise EngineBuildError(f"the engine built for {key} could not be deserialised")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.meta_path(key).unlink(missing_ok=True)  # a stale JSON must not outlive its engine
        atomic_write_bytes(self.engine_path(key), serialized)
        atomic_write_bytes(self.meta_path(key), json.dumps(key.fields(), indent=2).encode())
        return engine


def _try_deserialize(deserialize: Callable[[bytes], EngineT | None],
                     serialized: bytes) -> EngineT | None:
    """``deserialize(serialized)``, with any exception read as "unreadable" (None)."""
    try:
        return deserialize(serialized)
    except Exception:  # TensorRT raises assorted runtime errors for damaged engines
        return None

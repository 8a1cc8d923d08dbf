"""Avatar bundles from elsewhere: everything is checked on load, in one place, so a crafted or
damaged bundle is a one-line error (exit code 2) and never a traceback, a hang or a huge
network. The checksum is recomputed for every crafted bundle: anyone can do that."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, crafted
from vcam.avatar import avatar_bytes, load_avatar, read_bundle
from vcam.avatar_checks import OPTIONAL_ENTRIES, REQUIRED_ENTRIES, expected_generator
from vcam.cli import main
from vcam.compiled import render_once
from vcam.enroll import Photo, enroll
from vcam.errors import UserError
from vcam.models.config import config_from_file, get_config
from vcam.models.store import load_models
from vcam.train.finetune import FineTuneSettings

Tensors = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def bundle(tiny_model, dlib_detector, astronaut_image, tmp_path_factory) -> Path:
    avatar, _ = enroll([Photo("astronaut", astronaut_image)], "astro", load_models(tiny_model),
                       dlib_detector, FineTuneSettings())
    path = tmp_path_factory.mktemp("valid") / "astro.avatar.safetensors"
    path.write_bytes(avatar_bytes(avatar))
    return path


def first_generator_tensor(tensors: Tensors) -> str:
    return next(key for key in sorted(tensors) if key.endswith("stem.weight"))


def wrong_shape(tensors: Tensors) -> None:
    key = first_generator_tensor(tensors)
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, *tensors[key].shape[1:])


def no_frames(tensors: Tensors) -> None:
    tensors["enrollment.crops"] = tensors["enrollment.crops"][:0].contiguous()
    tensors["enrollment.landmarks"] = tensors["enrollment.landmarks"][:0].contiguous()


def five_landmarks(tensors: Tensors) -> None:
    tensors["enrollment.landmarks"] = tensors["enrollment.landmarks"][:, :5].contiguous()


def wide_config(document: dict) -> None:
    document["config"] = dict(document["config"], base_channels=8 * 64, max_channels=32 * 64)


def not_a_number(tensors: Tensors) -> None:
    key = first_generator_tensor(tensors)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")


CRAFTED = {
    "generator-tensor-of-the-wrong-shape": ({"tensors": wrong_shape}, "expected float32"),
    "zero-enrollment-frames": ({"tensors": no_frames}, "no enrollment frames"),
    "landmarks-1x5x2": ({"tensors": five_landmarks}, "(T, 68, 2)"),
    "config-64x-wide": ({"document": wide_config}, "larger than any vcam model"),
    "weight-not-a-number": ({"tensors": not_a_number}, "not finite"),
    "unknown-entry": ({"tensors": lambda t: t.update(extra=torch.zeros(3))}, "does not know"),
    "missing-generator-tensor": ({"tensors": lambda t: t.pop(first_generator_tensor(t))},
                                 "1 tensors missing"),
    "name-with-a-path": ({"document": lambda d: d.update(name="../../x")}, "name"),
    "config-value-a-string": ({"document": lambda d: d["config"].update(image_size="64")},
                              "wrong type"),
}


@pytest.mark.parametrize("case", CRAFTED, ids=str)
def test_a_crafted_avatar_is_refused_on_load_in_one_line(bundle, tmp_path, case):
    changes, reason = CRAFTED[case]
    path = crafted(bundle, tmp_path / "crafted.avatar.safetensors", **changes)
    with pytest.raises(UserError) as refused:
        load_avatar(path)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("case", ["generator-tensor-of-the-wrong-shape", "zero-enrollment-frames",
                                  "landmarks-1x5x2", "config-64x-wide"])
def test_run_and_compile_refuse_a_crafted_avatar_with_exit_code_2(bundle, tmp_path, vcam_home,
                                                                  capsys, case):
    changes, reason = CRAFTED[case]
    path = crafted(bundle, tmp_path / "crafted.avatar.safetensors", **changes)
    before = path.read_bytes()
    out = tmp_path / "out.mp4"
    for command in (["compile", str(path)],
                    ["run", "--avatar", str(path), "--input", "demo", "--sink", f"file:{out}"]):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert reason in error and error.count("\n") == 1
    assert path.read_bytes() == before
    assert {item.name for item in tmp_path.iterdir()} <= {"crafted.avatar.safetensors", "home"}
    assert not (vcam_home / "compiled").exists()


def test_the_exact_compile_command_says_it_in_one_line_without_a_traceback(bundle, tmp_path):
    path = crafted(bundle, tmp_path / "crafted.avatar.safetensors", tensors=five_landmarks)
    result = subprocess.run([sys.executable, str(REPO / "run_vcam.py"), "compile", str(path)],
                            capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={"VCAM_HOME": str(tmp_path / "home"), "PATH": "/usr/bin"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "(T, 68, 2)" in result.stderr
    assert not (tmp_path / "home").exists()


def test_every_named_config_is_within_bounds_and_a_wider_one_is_not():
    for name in ("tiny", "cpu", "paper"):
        config = get_config(name)
        assert config_from_file(config.to_dict()) == config
        warp = dataclasses.replace(config, generator="warp")
        assert config_from_file(warp.to_dict()) == warp
        cavity = dataclasses.replace(warp, mouth_input="cavity")
        assert config_from_file(cavity.to_dict()) == cavity
        older = {key: value for key, value in warp.to_dict().items() if key != "mouth_input"}
        assert config_from_file(older) == warp  # files from before the choice: the warp
    paper = get_config("paper").to_dict()
    for change in ({"embedding_size": 1024}, {"num_bottleneck_blocks": 6},
                   {"decoder_attention": [128]}, {"encoder_attention": [32, 64]},
                   {"image_size": 512}, {"base_channels": True}, {"mouth_input": 1}):
        with pytest.raises(ValueError):
            config_from_file(paper | change)


def test_the_generator_rule_names_exactly_the_tensors_of_an_enrolled_avatar(bundle):
    tensors, _ = read_bundle(bundle)
    expected = expected_generator(get_config("tiny"))
    assert {key: tuple(value.shape) for key, value in tensors.items()
            if key.startswith("generator.")} == expected
    assert set(tensors) - set(expected) == set(REQUIRED_ENTRIES) | set(OPTIONAL_ENTRIES)
    assert not set(OPTIONAL_ENTRIES) & set(REQUIRED_ENTRIES)


# -- property: any mutation loads and renders, or is a one-line UserError ----------------------

NUMBERS = st.one_of(st.integers(-2, 2**40), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, 64, 256, 4096]))
JSON_VALUES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=8),
                        st.lists(st.integers(-4, 300), max_size=3))


@st.composite
def mutations(draw) -> tuple[str, object]:
    kind = draw(st.sampled_from(["tensor-value", "tensor-shape", "drop-entry", "config-value",
                                 "header-field", "raw-byte"]))
    return kind, draw(st.data())


def mutate(bundle: Path, out: Path, kind: str, data) -> Path:
    tensors, _ = read_bundle(bundle)
    key = data.draw(st.sampled_from(sorted(tensors)), label="entry")
    if kind == "raw-byte":
        raw = bytearray(bundle.read_bytes())
        position = data.draw(st.integers(0, len(raw) - 1), label="position")
        raw[position] ^= data.draw(st.integers(1, 255), label="xor")
        out.write_bytes(bytes(raw))
        return out
    if kind == "tensor-value":
        def change(contents: Tensors) -> None:
            flat = contents[key].clone().view(-1)
            if flat.numel():
                index = data.draw(st.integers(0, flat.numel() - 1), label="index")
                flat[index] = data.draw(st.floats(width=32) if flat.is_floating_point()
                                        else st.integers(0, 255), label="value")
            contents[key] = flat.view(contents[key].shape)
        return crafted(bundle, out, tensors=change)
    if kind == "tensor-shape":
        def reshape(contents: Tensors) -> None:
            tensor = contents[key]
            cut = data.draw(st.integers(0, max(0, tensor.shape[0] - 1)), label="rows")
            contents[key] = (tensor.reshape(-1) if data.draw(st.booleans(), label="flatten")
                             else tensor[:cut]).contiguous()
        return crafted(bundle, out, tensors=reshape)
    if kind == "drop-entry":
        return crafted(bundle, out, tensors=lambda contents: contents.pop(key))
    field = data.draw(st.sampled_from(
        ["image_size", "base_channels", "max_channels", "embedding_size", "num_down_blocks",
         "num_bottleneck_blocks", "encoder_attention", "decoder_attention", "generator",
         "io_stride", "unknown"] if kind == "config-value" else
        ["format", "version", "name", "config", "shots", "created"]), label="field")
    value = data.draw(JSON_VALUES, label="value")
    target = (lambda document: document["config"]) if kind == "config-value" else \
        (lambda document: document)
    return crafted(bundle, out, document=lambda document: target(document).update(
        {field: value}))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutation=mutations())
def test_a_mutated_bundle_loads_and_renders_or_is_a_one_line_user_error(bundle, tmp_path,
                                                                         mutation):
    kind, data = mutation
    path = mutate(bundle, tmp_path / "mutated.avatar.safetensors", kind, data)
    try:
        avatar = load_avatar(path)
        frame = render_once(avatar)
    except UserError as error:
        assert "\n" not in str(error)
        return
    assert frame.shape == (1, 3, avatar.config.image_size, avatar.config.image_size)


def test_an_avatar_whose_metadata_is_not_an_object_is_listed_as_unreadable(bundle, vcam_home):
    from safetensors.torch import save as save_tensors

    from vcam.avatar import METADATA_KEY, list_avatars

    tensors, _ = read_bundle(bundle)
    folder = vcam_home / "avatars"
    folder.mkdir(parents=True)
    path = folder / "odd.avatar.safetensors"
    path.write_bytes(save_tensors(tensors, metadata={METADATA_KEY: "[1, 2]"}))
    assert list_avatars() == [{"name": "odd", "path": str(path), "error": "unreadable"}]
    with pytest.raises(UserError, match="not a readable avatar"):
        load_avatar(path)

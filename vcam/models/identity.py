"""Identity features from dlib's face-recognition ResNet, ported to PyTorch.

The paper's content loss uses VGGFace; this module stands in with the network of dlib's
``dnn_face_recognition_ex.cpp`` (``anet_type``: a 29-conv ResNet with affine layers in place of
batch norm, mapping a 150x150 RGB face chip to a 128-d descriptor), whose trained weights ship
in ``face-recognition-models`` as ``dlib_face_recognition_resnet_model_v1.dat``.

The file is read here byte by byte (no dlib, no pickle): it is dlib's own serialization of the
whole network, outermost layer first:

* integers are a control byte (low nibble: byte count, bit 7: sign) then that many
  little-endian bytes; strings are an integer length then the bytes; booleans are the
  characters ``'1'``/``'0'``; scalar floats are an integer mantissa and exponent;
* a tensor is version 2, then num_samples, k, nr, nc, then that many little-endian float32;
  an alias tensor (a view into a layer's parameter tensor) is version 1 and its four sizes;
* ``add_loss_layer`` writes its version, the loss, then its subnetwork; every ``add_layer``
  writes its version, its subnetwork, the layer's own fields, then bookkeeping (flags and
  gradient tensors); tag and skip layers write only their version and subnetwork.  So the file
  is: the loss, the versions of all wrapping layers, the input layer, then each layer's
  fields from the input side out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vcam.landmarks.models import model_file

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
DESCRIPTOR_SIZE = 128
# Pixel values are divided by this after the mean is subtracted (dlib's input_rgb_image).
PIXEL_SCALE = 256.0
# The residual levels, input side first: (channels, blocks, whether the first block halves
# the resolution).  These are alevel4 .. alevel0 of anet_type.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))

# Where dlib's 150x150 chip (padding 0.25) lies in a crop made with vcam.landmarks.align's
# defaults (margin 1.8, lift 0.12), as (top, left, bottom, right) fractions of the crop;
# measured on skimage's astronaut photo at two scales (within 0.01 of each other).
VCAM_CROP_BOX = (0.175, 0.165, 0.845, 0.835)

# dlib's add_layer versions: a layer on a layer, the innermost layer (on the input layer).
_LAYER_VERSION = 2
_INPUT_LAYER_VERSION = 3


@dataclass(frozen=True)
class DlibLayer:
    """One computational layer of a dlib network (what its ``serialize`` wrote).

    ``kind`` is dlib's layer name without the version suffix (``con``, ``affine``, ``relu``,
    ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``).  ``geometry`` is (rows, columns,
    stride y, stride x, padding y, padding x) for convolutions and pools (rows = columns = 0:
    the whole input).  ``weight`` is OIHW for ``con``, (out, in) for ``fc`` and gamma (shaped
    to broadcast over NCHW) for ``affine``; ``bias`` is the bias or beta.
    """

    kind: str
    geometry: tuple[int, ...] = ()
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None


@dataclass(frozen=True)
class DlibNet:
    """The parts of a serialized dlib network that define its forward pass."""

    loss: str
    input_means: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: tuple[DlibLayer, ...]


class _Reader:
    """Sequential reader of dlib's serialization primitives over an in-memory file."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.pos = 0

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.name}: {message} at byte {self.pos}")

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise self.fail("unexpected end of file")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def scalar(self) -> float:
        mantissa = self.integer()
        return math.ldexp(mantissa, self.integer())

    def bool(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise self.fail(f"bad boolean {char!r}")
        return char == b"1"

    def string(self) -> str:
        return self.take(self.integer()).decode("latin-1")

    def version(self, *allowed: int) -> int:
        version = self.integer()
        if version not in allowed:
            raise self.fail(f"unsupported version {version}")
        return version

    def shape(self) -> tuple[int, int, int, int]:
        return (self.integer(), self.integer(), self.integer(), self.integer())

    def tensor(self) -> np.ndarray:
        self.version(2)
        shape = self.shape()
        count = math.prod(shape)
        values = np.frombuffer(self.take(4 * count), dtype="<f4")
        return values.astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        self.version(1)
        return self.shape()

    def skip_floats(self, count: int) -> None:
        for _ in range(count):
            self.scalar()


def read_dlib_net(path: str | Path) -> DlibNet:
    """Parse a dlib network file whose layers are among those ``anet_type`` uses.

    Raises ValueError when the file is truncated or holds anything else.
    """
    reader = _Reader(Path(path).read_bytes(), str(path))
    reader.version(1)  # add_loss_layer
    loss = _read_loss(reader)
    wrappers: list[int] = []
    while (version := reader.integer()) != _INPUT_LAYER_VERSION:
        if version not in (1, _LAYER_VERSION):
            raise reader.fail(f"unexpected layer version {version}")
        wrappers.append(version)
    means, size = _read_input(reader)
    layers = [_read_layer(reader)]
    _skip_input_layer_state(reader)
    for version in reversed(wrappers):
        if version == _LAYER_VERSION:
            layers.append(_read_layer(reader))
            _skip_layer_state(reader)
    if reader.pos != len(reader.data):
        raise reader.fail("trailing bytes")
    return DlibNet(loss, means, size, tuple(layers))


def _read_loss(reader: _Reader) -> str:
    name = reader.string()
    if name != "loss_metric_2":
        raise reader.fail(f"unsupported loss {name!r}")
    reader.skip_floats(2)  # margin, distance threshold
    return name


def _read_input(reader: _Reader) -> tuple[tuple[float, float, float], tuple[int, int]]:
    name = reader.string()
    if name != "input_rgb_image_sized":
        raise reader.fail(f"unsupported input layer {name!r}")
    means = (reader.scalar(), reader.scalar(), reader.scalar())
    return means, (reader.integer(), reader.integer())


def _skip_layer_state(reader: _Reader) -> None:
    """add_layer's bookkeeping: three flags, x_grad, cached_output, params_grad."""
    for _ in range(3):
        reader.bool()
    for _ in range(3):
        reader.tensor()


def _skip_input_layer_state(reader: _Reader) -> None:
    """The innermost add_layer's bookkeeping: three flags, x_grad, cached_output,
    grad_final, sample expansion factor."""
    _skip_layer_state(reader)
    reader.integer()


def _read_layer(reader: _Reader) -> DlibLayer:
    name = reader.string()
    parse = _LAYER_READERS.get(name)
    if parse is None:
        raise reader.fail(f"unsupported layer {name!r}")
    return parse(reader, name)


def _read_con(reader: _Reader, name: str) -> DlibLayer:
    params = reader.tensor().ravel()
    reader.integer()  # number of filters, repeated in the filters' alias
    geometry = tuple(reader.integer() for _ in range(6))
    filters, biases = reader.alias(), reader.alias()
    reader.skip_floats(4)  # learning-rate and weight-decay multipliers
    if name == "con_5":
        reader.bool()  # use_bias: an empty biases alias says the same
    weight, bias = _split_params(reader, params, filters, biases)
    return DlibLayer("con", geometry, weight, bias)


def _read_affine(reader: _Reader, name: str) -> DlibLayer:
    params = reader.tensor().ravel()
    gamma, beta = reader.alias(), reader.alias()
    reader.integer()  # conv or fc mode: the shapes of gamma and beta already say it
    weight, bias = _split_params(reader, params, gamma, beta)
    return DlibLayer("affine", (), weight, bias)


def _read_pool(reader: _Reader, name: str) -> DlibLayer:
    geometry = tuple(reader.integer() for _ in range(6))
    return DlibLayer(name.removesuffix("_2"), geometry)


def _read_fc(reader: _Reader, name: str) -> DlibLayer:
    outputs, inputs = reader.integer(), reader.integer()
    params = reader.tensor().ravel()
    weights, biases = reader.alias(), reader.alias()
    reader.integer()  # bias mode: an empty biases alias says the same
    reader.skip_floats(4)
    if weights[:2] != (inputs, outputs):
        raise reader.fail(f"fc weights {weights} do not match {inputs}->{outputs}")
    weight, bias = _split_params(reader, params, weights, biases)
    return DlibLayer(
        "fc", (), weight.reshape(inputs, outputs).T.copy(), None if bias is None else bias.ravel()
    )


def _read_plain(reader: _Reader, name: str) -> DlibLayer:
    return DlibLayer(name.removesuffix("_"))


def _split_params(
    reader: _Reader, params: np.ndarray, first: tuple[int, ...], second: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray | None]:
    """The two aliases a layer lays one after the other in its parameter tensor."""
    first_size, second_size = math.prod(first), math.prod(second)
    if first_size + second_size != params.size:
        raise reader.fail(f"parameters of size {params.size} do not hold {first} + {second}")
    weight = params[:first_size].reshape(first)
    bias = params[first_size:].reshape(second) if second_size else None
    return weight, bias


_LAYER_READERS: dict[str, Callable[[_Reader, str], DlibLayer]] = {
    "con_4": _read_con,
    "con_5": _read_con,
    "affine_": _read_affine,
    "relu_": _read_plain,
    "add_prev_": _read_plain,
    "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool,
    "fc_2": _read_fc,
}


# ---------------------------------------------------------------------------------------
# The network


class _LayerQueue:
    """The file's layers, taken in order and checked against the expected kind."""

    def __init__(self, layers: tuple[DlibLayer, ...]) -> None:
        self._layers: Iterator[DlibLayer] = iter(layers)
        self.index = -1

    def take(self, kind: str) -> DlibLayer:
        layer = next(self._layers, None)
        self.index += 1
        if layer is None or layer.kind != kind:
            found = "the end" if layer is None else repr(layer.kind)
            raise ValueError(f"layer {self.index}: expected {kind!r}, found {found}")
        return layer

    def finish(self) -> None:
        if next(self._layers, None) is not None:
            raise ValueError(f"more layers than anet_type after layer {self.index}")


def _frozen(tensor: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(tensor)), requires_grad=False)


def _conv(layer: DlibLayer) -> nn.Conv2d:
    assert layer.weight is not None
    out_channels, in_channels, rows, cols = layer.weight.shape
    geometry_rows, geometry_cols, stride_y, stride_x, pad_y, pad_x = layer.geometry
    if (geometry_rows, geometry_cols) != (rows, cols):
        raise ValueError(f"con geometry {layer.geometry} does not match filters {rows}x{cols}")
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        (rows, cols),
        (stride_y, stride_x),
        (pad_y, pad_x),
        bias=layer.bias is not None,
    )
    conv.weight = _frozen(layer.weight)
    if layer.bias is not None:
        conv.bias = _frozen(layer.bias.ravel())
    return conv


def _pool_args(layer: DlibLayer) -> tuple[tuple[int, int], tuple[int, int]]:
    rows, cols, stride_y, stride_x, pad_y, pad_x = layer.geometry
    if pad_y or pad_x or not rows or not cols:
        raise ValueError(f"unsupported {layer.kind} geometry {layer.geometry}")
    return (rows, cols), (stride_y, stride_x)


class Affine(nn.Module):
    """dlib's ``affine`` layer (batch norm frozen for inference): ``x * gamma + beta``."""

    def __init__(self, layer: DlibLayer) -> None:
        super().__init__()
        assert layer.weight is not None and layer.bias is not None
        self.gamma = _frozen(layer.weight)
        self.beta = _frozen(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger of the two shapes, each input taken as
    zero beyond its own channels, rows and columns."""
    shape = [max(sa, sb) for sa, sb in zip(a.shape[1:], b.shape[1:])]
    return _pad_to(a, shape) + _pad_to(b, shape)


def _pad_to(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    channels, rows, cols = shape
    pad = (0, cols - x.shape[3], 0, rows - x.shape[2], 0, channels - x.shape[1])
    return F.pad(x, pad) if any(pad) else x


class ResidualBlock(nn.Module):
    """``ares`` / ``ares_down``: relu(block(x) + shortcut(x)), where block is
    con-affine-relu-con-affine and the shortcut is x, or a 2x2 average pool of x when the
    block's first convolution has stride 2."""

    def __init__(self, layers: _LayerQueue, down: bool) -> None:
        super().__init__()
        self.conv1 = _conv(layers.take("con"))
        self.affine1 = Affine(layers.take("affine"))
        layers.take("relu")
        self.conv2 = _conv(layers.take("con"))
        self.affine2 = Affine(layers.take("affine"))
        self.pool = nn.AvgPool2d(*_pool_args(layers.take("avg_pool"))) if down else None
        layers.take("add_prev")
        layers.take("relu")

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        shortcut = x if self.pool is None else self.pool(x)
        return F.relu(add_zero_padded(y, shortcut))


class FaceIdentityNet(nn.Module):
    """dlib's face-recognition ResNet (``anet_type``) with its trained weights, frozen.

    Input: RGB chips of shape (B, 3, 150, 150), float, in [0, 255] like dlib's pixels, aligned
    the way ``dlib.get_face_chip(..., size=150, padding=0.25)`` aligns them (see
    :func:`crop_to_chip` for vcam's crops in [-1, 1]).  ``forward`` gives dlib's 128-d
    descriptor (faces of one person lie within about 0.6 of each other);
    :meth:`features` gives intermediate activations for a perceptual identity loss.  All
    parameters have ``requires_grad=False``; gradients flow to the input.  In float32 on the
    CPU it matches dlib's own descriptors to about 1e-6; on CUDA, TF32 convolutions (cuDNN's
    default in PyTorch) can move them more, which does not matter for a loss.
    """

    def __init__(self, net: DlibNet) -> None:
        super().__init__()
        if net.input_size != (CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected {CHIP_SIZE}x{CHIP_SIZE} input, file has {net.input_size}")
        means = torch.tensor(net.input_means, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("input_means", means)
        layers = _LayerQueue(net.layers)
        self.stem = _stem(layers)
        self.levels = nn.ModuleList(_level(layers, *level) for level in LEVELS)
        _check_global_pool(layers.take("avg_pool"))
        fc = layers.take("fc")
        layers.finish()
        assert fc.weight is not None
        self.fc = nn.Linear(fc.weight.shape[1], fc.weight.shape[0], bias=fc.bias is not None)
        self.fc.weight = _frozen(fc.weight)
        if fc.bias is not None:
            self.fc.bias = _frozen(fc.bias)
        self.eval()

    @classmethod
    def from_dlib(cls, path: str | Path | None = None) -> FaceIdentityNet:
        """The network from a dlib ``.dat`` file; by default the one in
        face-recognition-models."""
        return cls(read_dlib_net(path if path is not None else model_file(MODEL_FILE)))

    def features(self, chips: torch.Tensor) -> list[torch.Tensor]:
        """Activations after the stem (32 x 35 x 35) and after each residual level
        (32 x 35 x 35, 64 x 17 x 17, 128 x 8 x 8, 256 x 4 x 4, 256 x 2 x 2)."""
        _check_chips(chips)
        x = self.stem((chips - self.input_means) / PIXEL_SCALE)
        outputs = [x]
        for level in self.levels:
            x = level(x)
            outputs.append(x)
        return outputs

    def descriptor(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The 128-d descriptor from the output of :meth:`features`."""
        return self.fc(features[-1].mean(dim=(2, 3)))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.descriptor(self.features(chips))


def _stem(layers: _LayerQueue) -> nn.Sequential:
    """con 7x7/2, affine, relu, max pool 3x3/2."""
    conv, affine = _conv(layers.take("con")), Affine(layers.take("affine"))
    layers.take("relu")
    return nn.Sequential(
        conv, affine, nn.ReLU(), nn.MaxPool2d(*_pool_args(layers.take("max_pool")))
    )


def _level(layers: _LayerQueue, channels: int, blocks: int, down: bool) -> nn.Sequential:
    level = nn.Sequential(*(ResidualBlock(layers, down and i == 0) for i in range(blocks)))
    for block in level:
        if block.out_channels != channels:
            raise ValueError(f"expected {channels} channels, file has {block.out_channels}")
    return level


def _check_global_pool(layer: DlibLayer) -> None:
    if layer.geometry != (0, 0, 1, 1, 0, 0):
        raise ValueError(f"expected avg_pool_everything, file has {layer.geometry}")


def _check_chips(chips: torch.Tensor) -> None:
    if chips.ndim != 4 or tuple(chips.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
        raise ValueError(
            f"chips must be (B, 3, {CHIP_SIZE}, {CHIP_SIZE}), got {tuple(chips.shape)}"
        )


def crop_to_chip(
    crops: torch.Tensor, box: tuple[float, float, float, float] = VCAM_CROP_BOX
) -> torch.Tensor:
    """FaceIdentityNet input from face crops in [-1, 1] (B, 3, H, W): differentiable.

    ``box`` (top, left, bottom, right, as fractions of the crop) is cut out, rounded to whole
    pixels, then resized to 150x150 (bilinear, antialiased) and mapped to [0, 255].  The
    default frames the face of a crop made by :mod:`vcam.landmarks.align` about as dlib's chip
    does; pass ``(0, 0, 1, 1)`` to use the whole crop.  This only approximates dlib's
    alignment, which also undoes head roll and scales by the inner landmarks, so descriptors
    of such chips sit about 0.1-0.2 from those of dlib's own chips: fine for a loss that
    compares two crops framed the same way, not for matching against dlib's descriptors.
    """
    _, _, height, width = crops.shape
    top, left, bottom, right = box
    rows = slice(round(top * height), max(round(bottom * height), round(top * height) + 1))
    cols = slice(round(left * width), max(round(right * width), round(left * width) + 1))
    chips = F.interpolate(
        crops[:, :, rows, cols],
        size=(CHIP_SIZE, CHIP_SIZE),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return (chips + 1) * 127.5

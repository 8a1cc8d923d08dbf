"""`vcam bench codec`: what a landmark-only call sends, against H.264 of the same faces.

Over preprocessed clips, split by identity: a shape basis is fitted on one part, and the
other part is coded as a call would code it (one encoder and decoder per clip, the default
codec settings), giving the landmark stream's kbit/s at 30 fps and its mean landmark error in
pixels of a 256 px crop. The same crops (at 256 x 256) are encoded with libx264 (CRF 23,
preset veryfast) at 30 fps for comparison. Also reported: the error of the shape basis
alone by component count, a rate/error curve over quantiser steps, the stream of landmarks
smoothed as the live tracker smooths them, and what zlib and lzma make of the payloads.

On the wire (``vcam.net.wire``'s per-packet sizes): the landmark stream as a call sends it
(``vcam.net.packing``: frames at the send rate, several a packet, played out at 30 fps by
interpolation; its error is that of the played-out landmarks against every original frame)
in data-channel messages with their SCTP, DTLS, UDP and IPv4 headers, and the SCTP
acknowledgements they cause coming back (aiortc's: a 93 B packet each; with
``vcam.net.acknowledgements``: a 16 B chunk bundled with the other side's data); H.264 in
RTP packets with their SRTP, UDP and IPv4 headers; and the whole call (voice and landmarks)
beside a typical video call's rate.
"""

from __future__ import annotations

import lzma
import math
import time
import zlib
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np

from vcam.data.clips import Clip
from vcam.errors import UserError
from vcam.landmarks.shape_basis import COORDINATES, ShapeBasis, fit_shape_basis
from vcam.landmarks.tracker import OneEuroFilter, TrackerSettings
from vcam.net.audio import FRAME_SAMPLES, SAMPLE_RATE, VOICE_BITRATE
from vcam.net.codec import (
    CHECKSUM,
    HEADER,
    KEY_HEADER,
    STEP_UNIT,
    CodecSettings,
    Decoder,
    Encoder,
)
from vcam.net.packing import PackedDecoder, PackedEncoder, PackingSettings
from vcam.net.wire import (
    SACK_BYTES,
    SACK_CHUNK,
    UDP_IPV4_BYTES,
    data_channel_wire_bytes,
    video_rtp_wire_bytes,
    voice_wire_bytes,
)

REFERENCE_CROP = 256
# A typical video call, for comparison: Zoom's published bandwidth for 1:1 video calls (its
# system requirements: "600kbps (up/down) for high quality video, 1.2 Mbps (up/down) for
# 720p HD video").
TYPICAL_VIDEO_CALL_KBIT = {"high quality": 600.0, "720p HD": 1200.0}
TYPICAL_VIDEO_CALL_SOURCE = ("Zoom's system requirements, bandwidth for 1:1 video calling "
                             "(support.zoom.com)")
BASIS_ERROR_COMPONENTS = (4, 8, 16, 32, 64, 136)
LZMA_DICTIONARY_BYTES = 4096


@dataclass(frozen=True)
class CodecBenchSettings:
    """What to measure: ``fit_fraction`` of the identities fit the basis of ``components``;
    ``codec`` codes the headline stream, ``curve_steps_px`` give the rate/error curve."""

    fit_fraction: float = 0.5
    components: int = 136
    codec: CodecSettings = field(default_factory=CodecSettings)
    packing: PackingSettings = field(default_factory=PackingSettings)
    curve_steps_px: tuple[float, ...] = (0.3, 0.6, 1.0, 2.0, 3.0)
    h264_crf: int = 23
    h264_preset: str = "veryfast"


@dataclass(frozen=True)
class Split:
    fit: list[Clip]
    evaluate: list[Clip]
    by: str


def crop_size(clip: Clip) -> int:
    size = clip.meta.get("size")
    return int(size) if size else clip.frame(0).shape[0]


def split_clips(clips: list[Clip], fit_fraction: float) -> Split:
    """Split by identity (spread evenly over the sorted identities); by clip if there is
    only one identity."""
    if len(clips) < 2:
        raise UserError("the codec bench needs at least two preprocessed clips (one to fit "
                        "the shape basis, one to code)")
    identities = sorted({clip.identity for clip in clips})
    if len(identities) >= 2:
        chosen = set(spread(identities, fit_fraction))
        fit = [clip for clip in clips if clip.identity in chosen]
        return Split(fit, [clip for clip in clips if clip.identity not in chosen], "identity")
    chosen_ids = set(spread([clip.clip_id for clip in clips], fit_fraction))
    return Split([clip for clip in clips if clip.clip_id in chosen_ids],
                 [clip for clip in clips if clip.clip_id not in chosen_ids], "clip")


def spread(names: list[str], fraction: float) -> list[str]:
    """About ``fraction`` of ``names``, evenly spread, at least one and never all."""
    picked = [name for index, name in enumerate(names)
              if math.floor((index + 1) * fraction) > math.floor(index * fraction)]
    return picked[:len(names) - 1] or names[:1]


def fit_basis(clips: list[Clip], components: int) -> ShapeBasis:
    shapes = np.concatenate([clip.landmarks * (REFERENCE_CROP / crop_size(clip))
                             for clip in clips])
    return fit_shape_basis(shapes, min(components, COORDINATES), REFERENCE_CROP)


def basis_errors(basis: ShapeBasis, clips: list[Clip]) -> dict[str, float]:
    """Mean landmark error (px of a 256 px crop) of the basis alone, by component count."""
    shapes = np.concatenate([clip.landmarks * (REFERENCE_CROP / crop_size(clip))
                             for clip in clips])
    errors = {}
    for count in BASIS_ERROR_COMPONENTS:
        if count <= basis.count:
            part = basis.truncated(count)
            rebuilt = part.reconstruct(part.project(shapes, REFERENCE_CROP), REFERENCE_CROP)
            errors[str(count)] = float(np.linalg.norm(rebuilt - shapes, axis=-1).mean())
    return errors


def smoothed(landmarks: np.ndarray, fps: float) -> np.ndarray:
    """Landmarks through the live tracker's One Euro filter (its default settings)."""
    tracker = TrackerSettings()
    smoother = OneEuroFilter(tracker.min_cutoff, tracker.beta, tracker.derivative_cutoff)
    return np.stack([smoother(points, index / fps) for index, points in enumerate(landmarks)])


@dataclass
class StreamTally:
    """Running totals of one coded stream."""

    packet_bytes: list[int] = field(default_factory=list)
    keys: list[bool] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    coded: list[np.ndarray] = field(default_factory=list)
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0


def code_clip(basis: ShapeBasis, landmarks: np.ndarray, size: int, fps: float,
              settings: CodecSettings, tally: StreamTally) -> None:
    """Code one clip as one call and add it to ``tally``."""
    encoder, decoder = Encoder(basis, size, settings), Decoder(basis, size)
    for index, points in enumerate(landmarks):
        started = time.perf_counter()
        packet = encoder.encode(points, round(index * 1e6 / fps))
        middle = time.perf_counter()
        frame = decoder.decode(packet)
        tally.encode_seconds += middle - started
        tally.decode_seconds += time.perf_counter() - middle
        if frame is None:
            raise RuntimeError("the landmark decoder refused a packet of its own encoder")
        tally.packet_bytes.append(len(packet))
        tally.keys.append(frame.key)
        tally.coded.append(encoder.last_coded)
        error = np.linalg.norm(frame.landmarks - points, axis=-1).mean()
        tally.errors.append(float(error) * REFERENCE_CROP / size)


def code_stream(basis: ShapeBasis, clips: list[Clip], fps: float, settings: CodecSettings,
                smooth: bool = False) -> StreamTally:
    tally = StreamTally()
    for clip in clips:
        landmarks = smoothed(clip.landmarks, fps) if smooth else clip.landmarks
        code_clip(basis, landmarks, crop_size(clip), fps, settings, tally)
    return tally


def code_packed(basis: ShapeBasis, landmarks: np.ndarray, size: int, fps: float,
                codec: CodecSettings, packing: PackingSettings | None
                ) -> tuple[np.ndarray, list[int]]:
    """A clip as a call sends it: the landmarks played out at every frame's capture time
    (coded, decoded and interpolated linearly between the frames sent, as the receiver's
    jitter buffer does; held past the last) and the sizes of the packets."""
    encoder, decoder = PackedEncoder(basis, size, codec, packing), PackedDecoder(basis, size)
    times = np.round(np.arange(len(landmarks)) * 1e6 / fps).astype(np.int64)
    packets = [packet for points, capture_us in zip(landmarks, times.tolist())
               for packet in encoder.encode(points, capture_us)]
    if encoder.frames:
        packets.append(encoder.flush())
    frames = [frame for packet in packets for frame in decoder.decode_frames(packet)]
    if len(frames) != encoder.kept:
        raise RuntimeError("the landmark decoder refused a packet of its own encoder")
    sent_times = np.array([frame.capture_us for frame in frames], dtype=np.float64)
    sent = np.stack([frame.landmarks for frame in frames]).reshape(len(frames), -1)
    shown = np.stack([np.interp(times, sent_times, column) for column in sent.T], axis=1)
    return shown.reshape(landmarks.shape).astype(np.float32), [len(packet) for packet in packets]


def packed_report(basis: ShapeBasis, clips: list[Clip], fps: float, codec: CodecSettings,
                  packing: PackingSettings) -> dict:
    """The landmark stream as a call sends it: payload and wire kbit/s, the SCTP
    acknowledgements it causes the other way, and the error of what is played out."""
    sizes: list[int] = []
    errors: list[np.ndarray] = []
    for clip in clips:
        size = crop_size(clip)
        shown, packet_sizes = code_packed(basis, clip.landmarks, size, fps, codec, packing)
        sizes += packet_sizes
        errors.append(np.linalg.norm(shown - clip.landmarks, axis=-1).mean(axis=-1)
                      * REFERENCE_CROP / size)
    seconds = sum(len(clip) for clip in clips) / fps
    payload, packets, error = sum(sizes), len(sizes), np.concatenate(errors)
    return {"send_fps": packing.send_fps, "frames_per_packet": packing.frames_per_packet,
            "step_px": codec.step_code * STEP_UNIT * REFERENCE_CROP,
            "packets_per_s": packets / seconds, "mean_packet_bytes": payload / packets,
            "kbit_per_s": kbit(payload, seconds),
            "wire_kbit_per_s": kbit(data_channel_wire_bytes(payload, packets), seconds),
            "acks_wire_kbit_per_s": kbit(packets * (SACK_BYTES + UDP_IPV4_BYTES), seconds),
            "acks_bundled_kbit_per_s": kbit(packets * SACK_CHUNK, seconds),
            "mean_error_px": float(error.mean()), "p95_error_px": float(np.percentile(error, 95)),
            "added_delay_ms": packing.playout_delay_ms(0.0) - 1000.0 / fps}


def kbit(byte_count: float, seconds: float) -> float:
    return 8 * byte_count / 1000 / seconds


def whole_call(landmarks: dict) -> dict:
    """One way of a call: the voice (Opus at its nominal rate in 20 ms RTP packets) and
    the landmarks with the acknowledgements of the other side's (bundled), on the wire."""
    packets = SAMPLE_RATE / FRAME_SAMPLES
    voice_wire = kbit(voice_wire_bytes(VOICE_BITRATE / 8, packets), 1.0)
    stream = landmarks["wire_kbit_per_s"] + landmarks["acks_bundled_kbit_per_s"]
    return {"voice_kbit_per_s": VOICE_BITRATE / 1000, "voice_wire_kbit_per_s": voice_wire,
            "landmarks_wire_kbit_per_s": stream, "wire_kbit_per_s": voice_wire + stream,
            "typical_video_call_kbit_per_s": TYPICAL_VIDEO_CALL_KBIT,
            "typical_source": TYPICAL_VIDEO_CALL_SOURCE}


def kbit_per_second(byte_counts: list[int], fps: float) -> float:
    return 8 * sum(byte_counts) * fps / len(byte_counts) / 1000 if byte_counts else 0.0


def stream_report(tally: StreamTally, fps: float, settings: CodecSettings) -> dict:
    sizes, keys = np.array(tally.packet_bytes), np.array(tally.keys)
    frames = len(sizes)
    return {"step_px": settings.step_code * STEP_UNIT * REFERENCE_CROP,
            "key_interval": settings.key_interval, "frames": frames,
            "kbit_per_s": kbit_per_second(tally.packet_bytes, fps),
            "header_kbit_per_s": kbit_per_second(header_sizes(keys).tolist(), fps),
            "mean_error_px": float(np.mean(tally.errors)),
            "p95_error_px": float(np.percentile(tally.errors, 95)),
            "max_error_px": float(np.max(tally.errors)),
            "mean_packet_bytes": float(sizes.mean()),
            "mean_key_bytes": float(sizes[keys].mean()) if keys.any() else 0.0,
            "mean_delta_bytes": float(sizes[~keys].mean()) if not keys.all() else 0.0,
            "max_packet_bytes": int(sizes.max()),
            "encode_ms_per_frame": 1000 * tally.encode_seconds / frames,
            "decode_ms_per_frame": 1000 * tally.decode_seconds / frames}


def header_sizes(keys: np.ndarray) -> np.ndarray:
    """Bytes of header and checksum of each packet."""
    return HEADER.size + CHECKSUM.size + KEY_HEADER.size * keys.astype(np.int64)


def zigzag_varint(values: np.ndarray) -> bytes:
    """Signed integers as zigzag LEB128 varints (the simplest byte-aligned coding)."""
    out = bytearray()
    for value in values.tolist():
        number = 2 * value if value >= 0 else -2 * value - 1
        while number >= 0x80:
            out.append(0x80 | (number & 0x7F))
            number >>= 7
        out.append(number)
    return bytes(out)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def raw_lzma(data: bytes) -> bytes:
    # The smallest dictionary: a packet is tiny, and a large one costs time, not bytes.
    return lzma.compress(data, format=lzma.FORMAT_RAW,
                         filters=[{"id": lzma.FILTER_LZMA2, "preset": 9,
                                   "dict_size": LZMA_DICTIONARY_BYTES}])


def entropy_coder_comparison(tally: StreamTally) -> dict:
    """Mean payload bytes per packet: ours against byte-aligned and general-purpose coders
    (each packet compressed alone: a lossy channel allows no shared state)."""
    ours = np.array(tally.packet_bytes) - header_sizes(np.array(tally.keys))
    varints = [zigzag_varint(values) for values in tally.coded]
    return {"range_coder": float(np.mean(ours)),
            "zigzag_varint": float(np.mean([len(data) for data in varints])),
            "varint_zlib_raw": float(np.mean([len(raw_deflate(data)) for data in varints])),
            "varint_lzma_raw": float(np.mean([len(raw_lzma(data)) for data in varints]))}


def h264_frame_bytes(clips: list[Clip], fps: float, crf: int, preset: str) -> list[int]:
    """libx264 of the clips' crops at 256 x 256 and ``fps``, one stream per clip: the size
    of every encoded frame."""
    sizes: list[int] = []
    for clip in clips:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width = encoder.height = REFERENCE_CROP
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = Fraction(1, round(fps))
        encoder.framerate = Fraction(round(fps), 1)
        encoder.options = {"crf": str(crf), "preset": preset, "threads": "1"}
        for index in range(len(clip)):
            sizes += [packet.size for packet in encoder.encode(crop_frame(clip, index))]
        sizes += [packet.size for packet in encoder.encode(None)]
    return sizes


def crop_frame(clip: Clip, index: int) -> av.VideoFrame:
    image = clip.frame(index)
    if image.shape[:2] != (REFERENCE_CROP, REFERENCE_CROP):
        image = cv2.resize(image, (REFERENCE_CROP, REFERENCE_CROP), interpolation=cv2.INTER_CUBIC)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame = frame.reformat(format="yuv420p")
    frame.pts = index
    return frame


def split_report(split: Split) -> dict:
    return {"by": split.by,
            "fit_identities": sorted({clip.identity for clip in split.fit}),
            "fit_clips": [clip.clip_id for clip in split.fit],
            "fit_frames": sum(len(clip) for clip in split.fit),
            "eval_identities": sorted({clip.identity for clip in split.evaluate}),
            "eval_clips": [clip.clip_id for clip in split.evaluate],
            "eval_frames": sum(len(clip) for clip in split.evaluate)}


def rate_curve(basis: ShapeBasis, clips: list[Clip], fps: float,
               settings: CodecBenchSettings) -> list[dict]:
    curve = []
    for step in settings.curve_steps_px:
        codec = CodecSettings(settings.codec.key_interval, step)
        tally = code_stream(basis, clips, fps, codec)
        curve.append({"step_px": step, "kbit_per_s": kbit_per_second(tally.packet_bytes, fps),
                      "mean_error_px": float(np.mean(tally.errors))})
    return curve


def run_codec_bench(clips: list[Clip], fps: float = 30.0,
                    settings: CodecBenchSettings | None = None) -> dict:
    """Measure the landmark codec on ``clips`` against H.264; returns the report."""
    settings = settings or CodecBenchSettings()
    split = split_clips(list(clips), settings.fit_fraction)
    basis = fit_basis(split.fit, settings.components)
    tally = code_stream(basis, split.evaluate, fps, settings.codec)
    landmarks = stream_report(tally, fps, settings.codec)
    landmarks["wire_kbit_per_s"] = kbit(data_channel_wire_bytes(
        sum(tally.packet_bytes), len(tally.packet_bytes)), len(tally.packet_bytes) / fps)
    packed = packed_report(basis, split.evaluate, fps, settings.codec, settings.packing)
    smooth = code_stream(basis, split.evaluate, fps, settings.codec, smooth=True)
    sizes = h264_frame_bytes(split.evaluate, fps, settings.h264_crf, settings.h264_preset)
    seconds = sum(len(clip) for clip in split.evaluate) / fps
    h264 = {"codec": "libx264", "crf": settings.h264_crf, "preset": settings.h264_preset,
            "size": f"{REFERENCE_CROP}x{REFERENCE_CROP}", "kbit_per_s": kbit(sum(sizes), seconds),
            "wire_kbit_per_s": kbit(sum(map(video_rtp_wire_bytes, sizes)), seconds)}
    return {"fps": fps, "crop_px": REFERENCE_CROP, "split": split_report(split),
            "basis": {"components": basis.count, "fitted_on_frames": basis.samples,
                      "error_px_by_components": basis_errors(basis, split.evaluate)},
            "landmarks": landmarks, "landmarks_sent": packed,
            "landmarks_smoothed": stream_report(smooth, fps, settings.codec),
            "rate_curve": rate_curve(basis, split.evaluate, fps, settings),
            "entropy_coders_payload_bytes": entropy_coder_comparison(tally),
            "h264": h264, "h264_to_landmarks_ratio": h264["kbit_per_s"] / landmarks["kbit_per_s"],
            "h264_to_landmarks_wire_ratio": h264["wire_kbit_per_s"] / packed["wire_kbit_per_s"],
            "call": whole_call(packed)}


def codec_report_lines(report: dict) -> list[str]:
    """The report for people."""
    split, stream, h264 = report["split"], report["landmarks"], report["h264"]
    smooth, sent, call = report["landmarks_smoothed"], report["landmarks_sent"], report["call"]
    lines = [
        f"shape basis: {report['basis']['components']} components fitted on "
        f"{split['fit_frames']} frames of {len(split['fit_clips'])} clips "
        f"({len(split['fit_identities'])} identities); coded {split['eval_frames']} frames of "
        f"{len(split['eval_clips'])} other clips ({len(split['eval_identities'])} identities), "
        f"split by {split['by']}",
        f"landmarks @ {report['fps']:g} fps: {stream['kbit_per_s']:.2f} kbit/s "
        f"(headers {stream['header_kbit_per_s']:.2f}), mean error {stream['mean_error_px']:.3f} "
        f"px (p95 {stream['p95_error_px']:.3f}, max {stream['max_error_px']:.3f}) on "
        f"{report['crop_px']} px crops, step {stream['step_px']:.3f} px, key every "
        f"{stream['key_interval']}",
        f"  packets: mean {stream['mean_packet_bytes']:.1f} B (key {stream['mean_key_bytes']:.1f},"
        f" delta {stream['mean_delta_bytes']:.1f}, max {stream['max_packet_bytes']}); encode "
        f"{stream['encode_ms_per_frame']:.2f} ms, decode {stream['decode_ms_per_frame']:.2f} ms",
        f"  smoothed like the live tracker: {smooth['kbit_per_s']:.2f} kbit/s, mean error "
        f"{smooth['mean_error_px']:.3f} px",
        f"  on the wire (a frame a packet): {stream['wire_kbit_per_s']:.2f} kbit/s",
        f"landmarks as a call sends them: {sent['send_fps']:g} fps (played out at "
        f"{report['fps']:g}), {sent['frames_per_packet']} frames a packet, "
        f"{sent['packets_per_s']:.1f} packets/s of {sent['mean_packet_bytes']:.1f} B, step "
        f"{sent['step_px']:.2f} px: {sent['kbit_per_s']:.2f} kbit/s payload, "
        f"{sent['wire_kbit_per_s']:.2f} kbit/s on the wire (SCTP, DTLS, UDP, IPv4)",
        f"  its SCTP acknowledgements, the other way: {sent['acks_wire_kbit_per_s']:.2f} "
        f"kbit/s as aiortc sends them, {sent['acks_bundled_kbit_per_s']:.2f} bundled with data; "
        f"played-out error {sent['mean_error_px']:.3f} px (p95 {sent['p95_error_px']:.3f}); "
        f"playout {sent['added_delay_ms']:.0f} ms later than a frame a packet",
        f"H.264 ({h264['codec']}, CRF {h264['crf']}, {h264['preset']}, {h264['size']}): "
        f"{h264['kbit_per_s']:.1f} kbit/s = {report['h264_to_landmarks_ratio']:.0f}x the "
        f"landmark stream; on the wire (RTP, SRTP, UDP, IPv4) {h264['wire_kbit_per_s']:.1f} "
        f"kbit/s = {report['h264_to_landmarks_wire_ratio']:.0f}x the landmarks as sent",
        f"whole call, each way on the wire: voice {call['voice_wire_kbit_per_s']:.1f} kbit/s "
        f"(Opus {call['voice_kbit_per_s']:g} kbit/s in 20 ms RTP packets) + landmarks "
        f"{call['landmarks_wire_kbit_per_s']:.1f} = {call['wire_kbit_per_s']:.1f} kbit/s; a "
        "typical video call: " + ", ".join(
            f"{rate:g} kbit/s ({name})"
            for name, rate in call["typical_video_call_kbit_per_s"].items())
        + f" each way ({call['typical_source']})",
        "rate/error: " + ", ".join(f"{point['step_px']:g} px step {point['kbit_per_s']:.1f} "
                                   f"kbit/s {point['mean_error_px']:.3f} px"
                                   for point in report["rate_curve"]),
        "basis alone (no residual), mean error by components: " + ", ".join(
            f"{count}: {error:.2f} px"
            for count, error in report["basis"]["error_px_by_components"].items()),
        "payload bytes per packet: " + ", ".join(
            f"{name} {size:.1f}" for name, size in report["entropy_coders_payload_bytes"].items())]
    return lines

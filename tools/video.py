"""Media input: open a video or image, check it against limits, and stream RGB
frames with their real timestamps.

Videos are decoded with PyAV one frame at a time (never the whole video in
memory); timestamps come from the container's presentation times, not from
`index / fps`. Images go through Pillow (EXIF orientation applied, alpha and
greyscale converted to RGB). The file type is decided by content, not by the
file name, and every problem a user can cause raises `MediaError` with a
sentence that names it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tools.analysis import SourceInfo
from tools.assets import sha256_file
from tools.errors import MediaError

# Container formats we accept (PyAV/FFmpeg demuxer names) and image formats (Pillow names).
VIDEO_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4/mov", "matroska,webm": "mkv/webm", "avi": "avi"}
IMAGE_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "TIFF", "MPO"}
SUPPORTED = "video (mp4, mov, webm, mkv, avi) or image (jpg, png, bmp, webp, tiff)"
# The file names a folder is searched for (`facereason batch DIR`); a file named on its own is
# tried whatever its name, and the content decides either way.
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES

# Pillow guards against decompression bombs itself; our own limit is checked first.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the machine. Defaults suit a 2-core CPU."""

    max_file_bytes: int = 500 * 1024 * 1024
    max_duration_s: float = 600.0
    max_pixels: int = 4096 * 4096  # per frame
    min_side: int = 32  # a face needs at least this many pixels


DEFAULT_LIMITS = Limits()


@dataclass
class Frame:
    index: int  # decoded-frame number, 0-based
    time: float  # seconds from the start of the stream
    rgb: np.ndarray  # (H, W, 3) uint8


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(f"No such file: {p.name}", code="not_found", http_status=404)
    if p.is_dir():
        raise MediaError(f"{p.name} is a directory, not a video or image file.", code="is_directory")
    if not p.is_file():
        raise MediaError(f"{p.name} is not a regular file.", code="not_a_file")
    return p


def _check_size(w: int, h: int, name: str, limits: Limits) -> None:
    if w * h > limits.max_pixels:
        raise MediaError(
            f"{name} is {w}x{h} pixels, over the limit of {limits.max_pixels:,} pixels per frame; "
            "downscale it first.", code="too_many_pixels", http_status=413)
    if min(w, h) < limits.min_side:
        raise MediaError(
            f"{name} is only {w}x{h} pixels; at least {limits.min_side}x{limits.min_side} is "
            "needed to see a face.", code="too_small", http_status=422)


class Media:
    """An opened, validated video or image. Use as a context manager."""

    def __init__(self, path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS,
                 display_name: str | None = None):
        self.path = _check_path(path)
        self.name = display_name or self.path.name
        self.limits = limits
        size = self.path.stat().st_size
        if size == 0:
            raise MediaError(f"{self.name} is empty (0 bytes).", code="empty_file")
        if size > limits.max_file_bytes:
            raise MediaError(
                f"{self.name} is {size / 2**20:.0f} MiB, over the limit of "
                f"{limits.max_file_bytes / 2**20:.0f} MiB.", code="file_too_large", http_status=413)
        self._container = None
        self._image: Image.Image | None = None
        self.truncated_at: int | None = None  # set when decoding stops early on a damaged file
        self.info = self._probe(size)

    # ------------------------------------------------------------------ probe
    def _probe(self, size: int) -> SourceInfo:
        img = self._try_image()
        if img is not None:
            self._image = img
            _check_size(img.width, img.height, self.name, self.limits)
            return SourceInfo(name=self.name, kind="image", width=img.width, height=img.height,
                              duration_s=0.0, n_frames=1, codec=img.format, size_bytes=size,
                              sha256=sha256_file(self.path))
        try:
            c = av.open(str(self.path), metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise MediaError(
                f"{self.name} is not a readable {SUPPORTED} ({type(exc).__name__}: the file is "
                "corrupt, truncated or not media).", code="unreadable_media", http_status=415) from None
        fmt = c.format.name
        if fmt not in VIDEO_FORMATS:
            c.close()
            raise MediaError(f"{self.name} is a '{fmt}' file; supported: {SUPPORTED}.",
                             code="unsupported_media", http_status=415)
        if not c.streams.video:
            c.close()
            raise MediaError(f"{self.name} has no video stream (audio only?).",
                             code="no_video_stream", http_status=415)
        s = c.streams.video[0]
        self._container = c
        w, h = s.codec_context.width, s.codec_context.height
        if not w or not h:
            self.close()
            raise MediaError(f"{self.name}: the video stream has no picture size; the file is "
                             "damaged.", code="unreadable_media", http_status=415)
        _check_size(w, h, self.name, self.limits)
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif c.duration is not None:
            duration = c.duration / av.time_base
        if duration is not None and duration > self.limits.max_duration_s:
            self.close()
            raise MediaError(
                f"{self.name} lasts {duration:.0f} s, over the limit of "
                f"{self.limits.max_duration_s:.0f} s; trim it first.",
                code="too_long", http_status=413)
        fps = float(s.average_rate) if s.average_rate else None
        return SourceInfo(name=self.name, kind="video", width=w, height=h, duration_s=duration,
                          native_fps=fps, n_frames=s.frames or None, codec=s.codec_context.name,
                          size_bytes=size, sha256=sha256_file(self.path))

    def _try_image(self) -> Image.Image | None:
        try:
            img = Image.open(self.path)
        except UnidentifiedImageError:
            return None
        except OSError as exc:
            raise MediaError(f"{self.name} looks like an image but cannot be read: {exc}.",
                             code="unreadable_media", http_status=415) from None
        if img.format not in IMAGE_FORMATS:
            # GIF, ICO, ... : Pillow reads them, we do not analyse them.
            raise MediaError(f"{self.name} is a {img.format} image; supported: {SUPPORTED}.",
                             code="unsupported_media", http_status=415)
        return img

    # ------------------------------------------------------------------ frames
    def frames(self, fps: float | None = None) -> Iterator[Frame]:
        """Yield frames in order; with `fps`, at most that many per second of media time."""
        if self.info.kind == "image":
            yield Frame(0, 0.0, self._image_rgb())
            return
        c = self._container
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        step = 1.0 / fps if fps else 0.0
        next_t = -1.0
        index = -1
        t0 = None
        try:
            for frame in c.decode(s):
                index += 1
                t = frame.time
                if t is None:  # no timestamps in the container: fall back to the nominal rate
                    t = index / (self.info.native_fps or 25.0)
                if t0 is None:
                    t0 = t  # streams may start at a non-zero pts; times are from the first frame
                t = float(t - t0)
                if t > self.limits.max_duration_s:
                    raise MediaError(
                        f"{self.name} runs past the limit of {self.limits.max_duration_s:.0f} s.",
                        code="too_long", http_status=413)
                if step and t < next_t - 1e-6:
                    continue
                next_t = (next_t if next_t >= 0 else t) + step
                if step and next_t <= t:
                    next_t = t + step
                yield Frame(index, t, frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as exc:
            if index <= 0:
                raise MediaError(f"{self.name} could not be decoded ({exc.strerror or exc}); the "
                                 "file is corrupt or truncated.", code="unreadable_media",
                                 http_status=415) from None
            self.truncated_at = index  # decoded what we could; the pipeline records a warning

    def _image_rgb(self) -> np.ndarray:
        img = ImageOps.exif_transpose(self._image)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Composite transparency over white rather than black: a black matte hides faces.
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba)
        return np.asarray(img.convert("RGB"))

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._image is not None:
            self._image.close()
            self._image = None

    def __enter__(self) -> Media:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_frames_at(path: str | os.PathLike, times: list[float],
                   limits: Limits = DEFAULT_LIMITS) -> list[np.ndarray]:
    """RGB frames nearest to each requested time (seconds), e.g. key frames for a VLM.

    One forward pass over the video; only the requested frames are kept.
    """
    if not times:
        return []
    with Media(path, limits) as m:
        if m.info.kind == "image":
            rgb = next(m.frames()).rgb
            return [rgb for _ in times]
        want = sorted(set(float(t) for t in times))
        best: dict[float, tuple[float, np.ndarray]] = {}
        last_t = max(want)
        for fr in m.frames():
            for t in want:
                d = abs(fr.time - t)
                if t not in best or d < best[t][0]:
                    best[t] = (d, fr.rgb)
            if fr.time > last_t + 0.5:
                break
        return [best[float(t)][1] for t in times if float(t) in best]


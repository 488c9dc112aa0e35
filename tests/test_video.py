"""Media input: real files, their timestamps, and every kind of bad input."""

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from tools.errors import MediaError
from tools.video import Limits, Media, read_frames_at


def test_timestamps_are_monotonic_and_match_an_independent_decoder(media):
    path = media("single_face.mp4")
    with Media(path) as m:
        ours = [f.time for f in m.frames()]
        assert m.info.kind == "video" and (m.info.width, m.info.height) == (640, 360)
    # OpenCV (its own FFmpeg build) reports each frame's position in milliseconds.
    cap = cv2.VideoCapture(str(path))
    theirs = []
    while cap.grab():
        theirs.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    cap.release()
    assert len(ours) == len(theirs) == 72
    assert np.all(np.diff(ours) > 0)
    np.testing.assert_allclose(ours, theirs, atol=0.002)


def test_sampling_at_a_target_fps(media):
    with Media(media("WolfgangLanger_Pexels.mp4")) as m:
        times = [f.time for f in m.frames(fps=5)]
        duration = m.info.duration_s
    assert abs(len(times) - duration * 5) <= 2
    assert np.all(np.diff(times) >= 0.2 - 0.05)


def test_read_frames_at_returns_the_nearest_frames(media):
    frames = read_frames_at(media("single_face.mp4"), [0.0, 1.0, 2.0])
    assert len(frames) == 3 and frames[0].shape == (360, 640, 3)
    assert not np.array_equal(frames[0], frames[2])


def test_image_with_alpha_and_greyscale_become_rgb(media, tmp_path):
    with Media(media("Image_with_alpha.png")) as m:
        rgb = next(m.frames()).rgb
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8
    grey = tmp_path / "grey.png"
    Image.open(media("single_face.jpg")).convert("L").save(grey)
    with Media(grey) as m:
        rgb = next(m.frames()).rgb
    assert rgb.shape[2] == 3 and np.array_equal(rgb[..., 0], rgb[..., 1])


def test_exif_orientation_is_applied(media, tmp_path):
    img = Image.open(media("single_face.jpg"))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rotated = tmp_path / "rotated.jpg"
    img.save(rotated, exif=exif)
    with Media(rotated) as m:
        rgb = next(m.frames()).rgb
    assert rgb.shape[:2] == (img.width, img.height)


# ---------------------------------------------------------------- bad input
def _expect(path, code, match, limits=None):
    with pytest.raises(MediaError, match=match) as err:
        with Media(path, limits or Limits()) as m:
            list(m.frames())
    assert err.value.code == code
    assert 400 <= err.value.http_status < 500
    return err.value


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    _expect(p, "empty_file", "empty")


def test_text_file_renamed_mp4(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 20)
    _expect(p, "unreadable_media", "not a readable")


def test_truncated_mp4(media, tmp_path):
    data = media("single_face.mp4").read_bytes()
    p = tmp_path / "truncated.mp4"
    p.write_bytes(data[: len(data) // 2])
    # single_face.mp4 keeps its index at the end: half a file has none.
    _expect(p, "unreadable_media", "corrupt, truncated")


def test_unsupported_container(tmp_path):
    p = tmp_path / "clip.flv"
    with av.open(str(p), "w", format="flv") as c:
        s = c.add_stream("flv", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    _expect(p, "unsupported_media", "'flv' file")


def test_gif_is_unsupported(tmp_path):
    p = tmp_path / "anim.gif"
    Image.new("RGB", (64, 64)).save(p)
    _expect(p, "unsupported_media", "GIF")


def test_one_pixel_image(tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(p)
    _expect(p, "too_small", "1x1")


def test_huge_image_over_the_pixel_limit(tmp_path):
    p = tmp_path / "huge.png"
    Image.new("RGB", (5000, 4000)).save(p)  # 20 Mpx > 4096x4096 default
    e = _expect(p, "too_many_pixels", "5000x4000")
    assert e.http_status == 413


def test_video_over_the_duration_limit(media):
    _expect(media("single_face.mp4"), "too_long", "over the limit of 1 s",
            Limits(max_duration_s=1.0))


def test_file_over_the_size_limit(media):
    _expect(media("single_face.mp4"), "file_too_large", "over the limit", Limits(max_file_bytes=1000))


def test_missing_path_and_directory(tmp_path):
    _expect(tmp_path / "nope.mp4", "not_found", "No such file")
    _expect(tmp_path, "is_directory", "directory")


def test_errors_never_reveal_the_directory(tmp_path):
    p = tmp_path / "secret" / "empty.mp4"
    p.parent.mkdir()
    p.write_bytes(b"")
    e = _expect(p, "empty_file", "empty")
    assert str(tmp_path) not in str(e)

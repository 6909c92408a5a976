"""Image normalisation: every accepted format becomes one PNG size; bad bytes are flagged."""
import io

from PIL import Image

from hyperrec.data import image_normaliser as images


def _encode(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def test_png_and_jpeg_of_any_shape_become_square_rgb_png_of_the_configured_size():
    for fmt, mode, size in (("PNG", "RGBA", (80, 40)), ("JPEG", "RGB", (33, 97)),
                            ("PNG", "L", (64, 64))):
        raw = _encode(Image.new(mode, size, color=200 if mode == "L" else None), fmt)
        png, status = images.normalise_image_bytes(raw, 24)
        assert status == "ok"
        with Image.open(io.BytesIO(png)) as out:
            assert (out.format, out.mode, out.size) == ("PNG", "RGB", (24, 24))


def test_colour_survives_normalisation():
    raw = _encode(Image.new("RGB", (50, 70), (200, 30, 40)), "PNG")
    png, _ = images.normalise_image_bytes(raw, 16)
    with Image.open(io.BytesIO(png)) as out:
        assert out.getpixel((8, 8)) == (200, 30, 40)


def test_normalisation_is_deterministic():
    raw = _encode(Image.effect_noise((60, 45), 40).convert("RGB"), "JPEG")
    assert images.normalise_image_bytes(raw, 32) == images.normalise_image_bytes(raw, 32)


def test_corrupt_and_truncated_bytes_are_flagged_not_raised():
    good = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    for raw in (b"", b"not an image", good[: len(good) // 2], b"\x89PNG\r\n\x1a\n" + b"\0" * 50):
        assert images.normalise_image_bytes(raw, 16) == (b"", "corrupt")


def test_missing_reference_or_file_is_missing(tmp_path):
    assert images.load_normalised_image(str(tmp_path), "", 16) == (b"", "missing")
    assert images.load_normalised_image(str(tmp_path), "images/nope.png", 16) == (b"", "missing")


def test_relative_reference_resolves_against_the_data_root(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(_encode(Image.new("RGB", (20, 20)), "JPEG"))
    png, status = images.load_normalised_image(str(tmp_path), "images/a.jpg", 8)
    assert status == "ok" and png.startswith(b"\x89PNG")

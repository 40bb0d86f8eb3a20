"""What installing auditcov puts where: pyproject.toml lists every package folder, the wheel holds `auditcov.sink`
and `auditcov.merge` (no top-level `sink` or `merge`) and every file of their folders, and the image's install
steps work without a Docker engine: the wheel and its dependencies' wheels, installed with no index into a fresh
virtual environment, give an `auditcov serve` that answers /healthz.

No network: the project's wheel is built from a copy of what the Dockerfile copies (without build isolation, with
this environment's setuptools), and the dependencies' wheels are repacked from this environment's installed
files (`wheel_of_installed`), so pip resolves and installs them exactly as it would from the index's wheels.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: What the Dockerfile's build stage copies to build the wheel.
BUILD_CONTEXT = ("pyproject.toml", "README.md", "merge", "sink")


def package_folders() -> dict[str, Path]:
    """Import name -> folder of every package folder (one holding __init__.py) under the mapped folders."""
    packages = {}
    for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            if "__pycache__" not in init.parts:
                relative = init.parent.relative_to(ROOT / folder)
                packages[".".join([name, *relative.parts])] = init.parent
    return packages


def test_pyproject_lists_every_package_folder():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = package_folders()
    assert {"auditcov.sink", "auditcov.merge"} <= set(folders)
    missing = sorted(set(folders) - listed)
    assert not missing, f"package folders missing from [tool.setuptools] packages in pyproject.toml: {missing}"
    assert not sorted(listed - set(folders)), "pyproject.toml lists packages that have no folder"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """auditcov's wheel, built as the image's build stage builds it."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in BUILD_CONTEXT:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(work / "dist"), str(source))
    (built,) = (work / "dist").glob("auditcov-*.whl")
    return built


def pip(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_wheel_installs_auditcov_sink_and_merge_with_every_file_of_their_folders(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"auditcov", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "auditcov/__init__.py" not in names, "auditcov is a namespace package: no folder of its own"
    expected = {
        "auditcov/" + path.relative_to(ROOT).as_posix().replace(folder, name.split(".")[1], 1)
        for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {"auditcov/sink/cli.py", "auditcov/merge/store.py"} <= expected
    missing = sorted(expected - names)
    assert not missing, f"files of the package folders not in the wheel (package-data in pyproject.toml?): {missing}"


def requirement_closure(name: str) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions `name` needs to run (none of its own extras, but the extras its requirements
    ask for, such as psycopg[binary]), itself included, by canonical name."""
    found: dict[str, importlib.metadata.Distribution] = {}
    wanted: list[tuple[str, frozenset[str]]] = [(name, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while wanted:
        wanted_name, extras = wanted.pop()
        dist = importlib.metadata.distribution(wanted_name)
        key = canonicalize_name(dist.metadata["Name"])
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in ("", *extras)):
                wanted.append((requirement.name, frozenset(requirement.extras)))
    return found


def wheel_of_installed(dist: importlib.metadata.Distribution, into: Path) -> Path:
    """A wheel of an installed distribution, from the files its RECORD lists under site-packages (the wheel it
    was installed from, less its scripts, which pip makes again from entry_points.txt, and bytecode)."""
    info = next(path for path in dist.files if path.parent.name.endswith(".dist-info")).parent
    # Several tags (py2-none-any, py3-none-any) make one compressed tag in the file name: py2.py3-none-any.
    tags = [tag.split("-") for tag in re.findall(r"^Tag: (\S+)$", dist.read_text("WHEEL"), re.MULTILINE)]
    tag = "-".join(".".join(dict.fromkeys(parts)) for parts in zip(*tags, strict=True))
    target = into / f"{info.name.removesuffix('.dist-info')}-{tag}.whl"
    skipped = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    record = []
    with zipfile.ZipFile(target, "w") as archive:
        for path in dist.files:
            if path.parts[0] == ".." or "__pycache__" in path.parts or (path.parent == info and path.name in skipped):
                continue
            data = Path(dist.locate_file(path)).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            archive.writestr(path.as_posix(), data)
            record.append(f"{path.as_posix()},sha256={digest},{len(data)}")
        record.append(f"{info.as_posix()}/RECORD,,")
        archive.writestr(f"{info.as_posix()}/RECORD", "\n".join(record) + "\n")
    return target


@pytest.mark.slow
def test_offline_install_from_wheels_serves_healthz(wheel, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for key, dist in requirement_closure("auditcov").items():
        if key != "auditcov":
            wheel_of_installed(dist, wheels)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip("--python", str(python), "install", "--no-compile", "--no-index", "--find-links", str(wheels), str(wheel))

    env = {key: value for key, value in os.environ.items() if not key.startswith("AUDITCOV_")}
    sink = subprocess.Popen(
        [str(venv / "bin" / "auditcov"), "serve", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "store.db")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = sink.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", first)
        assert match, f"the installed sink did not start: {first}{sink.stderr.read()}"
        url, port = match.groups()
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
            assert answer.status == 200
        # The image's HEALTHCHECK, run by the installed interpreter, with the settings in the environment.
        check = [str(python), "-m", "auditcov.sink.healthcheck"]
        env["AUDITCOV_LISTEN"] = f"127.0.0.1:{port}"
        assert subprocess.run(check, cwd=tmp_path, env=env, capture_output=True).returncode == 0
        # The installed auditcov is the wheel's, not this checkout's.
        where = subprocess.run(
            [str(python), "-c", "import auditcov.sink; print(auditcov.sink.__file__)"], capture_output=True, text=True
        )
        assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    finally:
        sink.terminate()
        assert sink.wait(60) == 0
    stopped = subprocess.run(check, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert stopped.returncode == 1 and "healthz" in stopped.stderr

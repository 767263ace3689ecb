"""What a GPU machine without a package index needs to run cnnzoo's GPU check, packed here and
installed there.

A GPU node in a cluster, or a container image (NGC's, a lab's), often has PyTorch, Lightning,
torchmetrics and torchvision but no route to PyPI. ``pack`` (on a machine with pip access and
cnnzoo's ``.venv``) puts the rest into one folder; ``install`` (there, standard library only)
puts it into a ``--target`` folder for ``PYTHONPATH``::

    python benchmarks/gpu_kit.py pack --python 3.12            # here: .gpu/
    python3 benchmarks/gpu_kit.py install --site /tmp/site      # there: prints PYTHONPATH

``.gpu/wheels`` holds the small wheels (Hydra, OmegaConf and its ANTLR runtime, WebDataset,
DALI's Python dependencies), at the versions this ``.venv`` has. NVIDIA DALI with nvImageCodec
and nvJPEG (~230 MB of wheels) is repacked for that one Python version (other versions'
extension modules, headers and symbol tables left out) into one ``xz`` archive split into
parts of ``--part-mb``, so that a transfer with a size limit can carry it over several trips;
``install`` unpacks it once every part is there and the whole matches its checksum, and says
which parts are missing otherwise (everything but ``data.loader=dali`` works without it).
"""

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

WHEELS = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "webdataset", "braceexpand")
DALI = ("nvidia-dali-cuda130", "nvidia-nvimgcodec-cu13", "nvidia-nvjpeg")
DALI_NEEDS = ("astunparse", "gast", "optree", "nvtx", "makefun", "libcst")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
ARCHIVE = "dali.tar.xz"
EXTENSION = re.compile(r"\.cpython-3\d+t?-")  # an extension module's version tag
KIT = "kit.json"


def pinned(names: tuple[str, ...]) -> list[str]:
    """``name==version`` as installed in this environment (what the tests ran with)."""
    try:
        return [f"{name}=={metadata.version(name)}" for name in names]
    except metadata.PackageNotFoundError as e:
        sys.exit(f"error: {e.name} is not installed here; run `make install` first.")


def download(specs: list[str], python: str, dest: Path) -> None:
    """Wheels for ``python`` on x86-64 Linux; a package published only as a source archive
    (the ANTLR runtime) is built into a wheel here (pure Python)."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for spec in specs:
        binary = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d",
                  str(dest), "--only-binary=:all:", "--python-version", python,
                  "--implementation", "cp", *platforms, spec]  # fmt: skip
        if subprocess.run(binary, capture_output=True).returncode == 0:
            continue
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                                "-w", str(dest), spec], capture_output=True, text=True)  # fmt: skip
        if built.returncode != 0:
            sys.exit(f"error: no wheel of {spec} for Python {python}:\n{built.stderr[-1500:]}")


def strip_tree(root: Path, python: str) -> None:
    """Leave out what Python ``python`` never loads (other versions' extension modules,
    C/C++ headers) and the shared libraries' symbol tables."""
    tag = "cpython-" + python.replace(".", "")
    for path in list(root.rglob("*")):
        if path.is_dir() and path.name == "include":
            shutil.rmtree(path)
        elif path.is_file() and EXTENSION.search(path.name) and tag + "-" not in path.name:
            path.unlink()
    strip = shutil.which("strip")
    libraries = [p for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink()]
    if strip and libraries:  # (one it cannot read stays as it is)
        subprocess.run([strip, "--strip-unneeded", *map(str, libraries)], capture_output=True)


def pack_dali(specs: list[str], python: str, kit: Path, part_mb: float) -> dict:
    """DALI's wheels unpacked, stripped, and packed as ``dali.tar.xz.NN`` parts."""
    with tempfile.TemporaryDirectory(dir=kit) as tmp:
        wheels, tree = Path(tmp) / "wheels", Path(tmp) / "site"
        download(specs, python, wheels)
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(tree)
        for path in tree.rglob("*.so*"):  # (zip keeps no permissions)
            path.chmod(0o755)
        strip_tree(tree, python)
        archive = Path(tmp) / ARCHIVE
        xz = shutil.which("xz")
        if xz and shutil.which("tar"):  # multi-threaded: minutes instead of ten
            with archive.open("wb") as out:
                pack = subprocess.Popen(["tar", "-C", str(tree), "-cf", "-", "."],
                                        stdout=subprocess.PIPE)  # fmt: skip
                subprocess.run([xz, "-9", "-T0", "-c"], stdin=pack.stdout, stdout=out, check=True)
                if pack.wait() != 0:
                    sys.exit("error: tar failed packing DALI")
        else:
            with tarfile.open(archive, "w:xz", preset=9) as t:
                t.add(tree, arcname=".")
        return write_parts(archive.read_bytes(), kit, part_mb)


def write_parts(data: bytes, kit: Path, part_mb: float) -> dict:
    """``data`` as ``dali.tar.xz.NN`` files of ``part_mb`` MiB; what ``install`` checks."""
    size = max(1, int(part_mb * 2**20))
    parts = []
    for n, start in enumerate(range(0, len(data), size)):
        chunk = data[start : start + size]
        name = f"{ARCHIVE}.{n:02d}"
        (kit / name).write_bytes(chunk)
        parts.append({"name": name, "bytes": len(chunk), "sha256": sha256(chunk)})
    return {"parts": parts, "archive_sha256": sha256(data), "archive_bytes": len(data)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(args) -> int:
    kit = args.dir
    if kit.exists() and any(kit.iterdir()):
        sys.exit(f"error: {kit} is not empty; remove it (or give another --dir) to pack anew.")
    kit.mkdir(parents=True, exist_ok=True)
    small = pinned(WHEELS) + pinned(DALI_NEEDS)
    download(small, args.python, kit / "wheels")
    record = {"python": args.python, "wheels": small, "dali": [], "parts": []}
    if not args.no_dali:
        dali = pinned(DALI)
        record.update(dali=dali, **pack_dali(dali, args.python, kit, args.part_mb))
    (kit / KIT).write_text(json.dumps(record, indent=1) + "\n")
    sizes = sorted((p.stat().st_size, p.relative_to(kit)) for p in kit.rglob("*") if p.is_file())
    for size, path in sizes:
        print(f"{size / 2**20:8.1f} MiB  {path}")
    return 0


def install(args) -> int:
    kit, site = args.dir, args.site
    if not (kit / KIT).is_file():
        sys.exit(f"error: no {kit / KIT}: pack the kit where pip works (make gpu-kit) and bring "
                 f"its folder here, or give --dir.")  # fmt: skip
    record = json.loads((kit / KIT).read_text())
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if record["python"] != python:
        sys.exit(f"error: {kit} was packed for Python {record['python']}, this is {python}; "
                 f"pack again with --python {python}.")  # fmt: skip
    site.mkdir(parents=True, exist_ok=True)
    wheels = sorted(map(str, (kit / "wheels").glob("*.whl")))
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    subprocess.run([*pip, "--no-compile", "--upgrade", "--target", str(site), *wheels], check=True)
    print(f"installed {len(wheels)} wheels into {site}")
    dali_ready = install_dali(record, kit, site) if record["parts"] else False
    print(f"NVIDIA DALI: {'installed' if dali_ready else 'not installed'}")
    print(f"PYTHONPATH={Path('src').resolve()}:{site}")
    return 0


def install_dali(record: dict, kit: Path, site: Path) -> bool:
    if (site / "nvidia" / "dali").is_dir():
        return True
    missing = [p["name"] for p in record["parts"] if not (kit / p["name"]).is_file()]
    if missing:
        print(f"DALI: parts missing here: {' '.join(missing)} (carry them, then install again)")
        return False
    chunks = []
    for part in record["parts"]:
        chunks.append(data := (kit / part["name"]).read_bytes())
        if sha256(data) != part["sha256"]:
            sys.exit(f"error: {kit / part['name']} is damaged (checksum differs); carry it again.")
    joined = b"".join(chunks)
    if sha256(joined) != record["archive_sha256"]:
        sys.exit(f"error: the DALI parts in {kit} are not one archive; pack and carry them again.")
    with tarfile.open(fileobj=io.BytesIO(joined), mode="r:xz") as archive:
        archive.extractall(site, filter="tar")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="download and pack (here, with pip access)")
    p.add_argument("--dir", type=Path, default=Path(".gpu"))
    p.add_argument("--python", default="3.12", help="the GPU machine's Python (major.minor)")
    p.add_argument("--part-mb", type=float, default=54, help="size of each DALI part (MiB)")
    p.add_argument("--no-dali", action="store_true", help="the small wheels only")
    i = sub.add_parser("install", help="install (there, no index needed)")
    i.add_argument("--dir", type=Path, default=Path(".gpu"))
    i.add_argument("--site", type=Path, default=Path("/tmp/site"))
    args = parser.parse_args()
    return pack(args) if args.command == "pack" else install(args)


if __name__ == "__main__":
    sys.exit(main())

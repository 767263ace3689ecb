"""A compact, cached file index of one split of an ImageNet-layout tree: ``SPLIT/<class>/<file>``.

Listing 1.28M files takes minutes on a network file system, so the list is built once and kept
in a cache file; a later start checks the tree's fingerprint (the modification times of the
split folder and of every class folder: adding, removing or renaming a file changes its
folder's) and reuses the list when nothing changed, with about a thousand ``stat`` calls
instead of a walk.

The list is stored as numpy arrays (one byte buffer of relative paths, their offsets, int32
targets), not as a Python list of ``(path, target)`` tuples: DataLoader workers forked from the
main process share these pages, whereas reading a Python object writes its reference count and
so copies the page, growing every worker by the whole list over an epoch.

File order and class order are torchvision's ``ImageFolder``'s (classes: sorted folder names;
files: ``sorted(os.walk(...))`` then sorted names), so class indices and sample indices agree
with it; folders and files whose names start with a dot are left out.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnzoo.errors import DataError
from cnnzoo.files import replaced_atomically

log = logging.getLogger(__name__)

# The one list of image file types cnnzoo reads (folders, shards, verify), lower case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
                    ".avif", ".heic", ".heif")  # fmt: skip
FORMAT = 3  # bump when the cache file's layout, or what it indexes, changes


@dataclass(frozen=True)
class SplitIndex:
    """The images of one split: ``path(i)`` and ``targets[i]`` for i < len."""

    folder: str
    classes: tuple[str, ...]
    targets: np.ndarray  # int32, class index of each file
    blob: np.ndarray  # uint8, the relative paths ("<class>/<file>") in the OS's bytes, back to back
    offsets: np.ndarray  # int64, len + 1: path i is blob[offsets[i]:offsets[i + 1]]
    other_files: int = 0  # files that are not images (by extension), not indexed
    other_examples: tuple[str, ...] = ()  # the first few of them ("<class>/<file>")

    def __len__(self) -> int:
        return len(self.targets)

    def relpath(self, i: int) -> str:
        return os.fsdecode(self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes())

    def path(self, i: int) -> str:
        return os.path.join(self.folder, self.relpath(i))

    def counts(self) -> np.ndarray:
        """Images per class, by class index."""
        return np.bincount(self.targets, minlength=len(self.classes))

    def select(self, indices: np.ndarray, classes: tuple[str, ...] | None = None) -> "SplitIndex":
        """The entries ``indices`` (in that order); with ``classes``, targets are renumbered to
        positions in that tuple (which must hold the class of every selected entry)."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, lengths = self.offsets[indices], np.diff(self.offsets)[indices]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        targets = self.targets[indices]
        if classes is not None:
            position = {name: i for i, name in enumerate(classes)}
            remap = np.array([position.get(name, -1) for name in self.classes], dtype=np.int32)
            targets = remap[targets]
            assert (targets >= 0).all(), "select(): a class outside `classes` was selected"
        return SplitIndex(
            self.folder,
            tuple(classes) if classes is not None else self.classes,
            targets,
            self.blob[gather],
            offsets,
            self.other_files,
            self.other_examples,
        )


def class_folders(folder: Path) -> list[str]:
    """The class folders of a split, sorted (ImageFolder's class order), hidden ones left out."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def file_identity(path: str | os.PathLike) -> tuple[int, int]:
    """What a file or folder is, whatever links lead to it: (device, inode)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def walk_once(
    top: str | os.PathLike, seen_dirs: set[tuple[int, int]], skipped: list[str]
) -> list[tuple[str, int, list[os.DirEntry]]]:
    """(folder, its device, its file entries) below ``top`` in ImageFolder's order (sorted
    ``os.walk``, links followed), hidden folders left out, and no folder whose identity is in
    ``seen_dirs`` (or walked before): the links leading to one are appended to ``skipped``. A
    folder it cannot list is an ``UnreadableFolder`` error (``os.walk`` would pass over it as
    if empty)."""
    walked = []
    stack = [(os.fspath(top), os.stat(top).st_dev)]
    while stack:
        root, device = stack.pop()
        try:
            with os.scandir(root) as listing:
                entries = list(listing)
        except OSError as e:
            _unreadable(e)
        files = []
        for entry in sorted(entries, key=lambda e: e.name):
            if not _is_dir(entry):
                files.append(entry)
            elif not entry.name.startswith("."):
                identity = file_identity(entry.path)
                if identity in seen_dirs:
                    skipped.append(entry.path)
                else:
                    seen_dirs.add(identity)
                    stack.append((entry.path, identity[0]))
        walked.append((root, device, files))
    return sorted(walked, key=lambda w: w[0])


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # (follows links, as os.walk(followlinks=True) does)
    except OSError:
        return False


def entry_identity(entry: os.DirEntry, device: int) -> tuple[int, int]:
    """``file_identity`` of a file entry of a folder on ``device``: the inode its listing
    gives (no system call) unless it is a link, which is followed."""
    if entry.is_symlink():
        return file_identity(entry.path)
    return device, entry.inode()


class UnreadableFolder(DataError):
    """A folder of the tree that cannot be listed: its images would be missed."""


def _unreadable(error: OSError) -> None:
    raise UnreadableFolder(
        f"{error.filename} cannot be read ({type(error).__name__}: {error.strerror}), so its "
        "images would be left out: give read access to it (chmod -R u+rX on the folder) or "
        "move it out of the tree. Nothing was cached: the next start reads it again."
    )


def scan(folder: Path) -> SplitIndex:
    """Walk ``folder`` (one split) and index its images, in ImageFolder's order.

    Links are followed (to files, and to folders kept elsewhere), but no folder is walked
    twice: a link that leads back up (``ln -s .. loop``, a cycle) or into another class folder
    is skipped, and a file reached twice (under two classes, or twice in one) counts once, at
    its first place. The skipped links are named in one warning. A folder that cannot be
    listed is an ``UnreadableFolder`` error, so that no index of a partial walk is kept."""
    try:
        classes = class_folders(folder)
    except OSError as e:
        _unreadable(e)
    paths: list[bytes] = []
    targets: list[int] = []
    other: list[str] = []
    seen_dirs = {file_identity(folder), *(file_identity(folder / name) for name in classes)}
    seen_files: set[tuple[int, int]] = set()
    skipped: list[str] = []
    for target, name in enumerate(classes):
        for root, device, entries in walk_once(folder / name, seen_dirs, skipped):
            rel = os.path.relpath(root, folder)
            for entry in entries:
                file = entry.name
                if file.startswith("."):
                    continue
                if not file.lower().endswith(IMAGE_EXTENSIONS):
                    other.append(os.path.join(rel, file))
                    continue
                try:
                    identity = entry_identity(entry, device)
                except OSError:  # a broken link: reading it will name it
                    identity = (-1, len(paths))
                if identity in seen_files:
                    skipped.append(entry.path)
                    continue
                seen_files.add(identity)
                paths.append(os.fsencode(os.path.join(rel, file)))  # (any name the OS has)
                targets.append(target)
    if skipped:
        log.warning(
            "%s: %d links lead to folders or images already indexed (a cycle, another class, a "
            "second copy) and were skipped, e.g. %s",
            folder,
            len(skipped),
            skipped[:3],
        )
    lengths = np.fromiter(map(len, paths), dtype=np.int64, count=len(paths))
    offsets = np.zeros(len(paths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    blob = np.frombuffer(b"".join(paths), dtype=np.uint8).copy()
    targets_array = np.array(targets, dtype=np.int32)
    return SplitIndex(
        str(folder), tuple(classes), targets_array, blob, offsets, len(other), tuple(other[:3])
    )


def fingerprint(folder: Path, classes: tuple[str, ...]) -> dict:
    """What changes when the split changes: its own mtime (a class folder added or removed) and
    each class folder's (a file added, removed or renamed)."""
    return {
        "format": FORMAT,
        "folder": str(folder),
        "mtime_ns": folder.stat().st_mtime_ns,
        "classes": list(classes),
        "class_mtime_ns": [(folder / c).stat().st_mtime_ns for c in classes],
    }


def cache_file(folder: Path, cache_dir: Path) -> Path:
    key = hashlib.sha1(os.fsencode(folder.resolve())).hexdigest()[:16]
    return cache_dir / f"{folder.name}-{key}.npz"


def load_index(folder: Path, cache_dir: Path | None, rebuild: bool = False) -> SplitIndex:
    """The index of ``folder``: from the cache when its fingerprint still matches, else a
    fresh walk (saved to ``cache_dir`` when given and writable)."""
    folder = Path(folder).absolute()
    if cache_dir is None:
        return scan(folder)
    path = cache_file(folder, Path(cache_dir))
    if not rebuild and path.is_file():
        cached = _read(path)
        if cached is not None:
            meta, index = cached
            try:
                current = fingerprint(folder, index.classes)
            except FileNotFoundError:  # a class folder went away
                current = None
            if current == meta:
                return index
            log.info("%s changed since it was indexed: indexing it again", folder)
    index = scan(folder)
    _write(path, index, fingerprint(folder, index.classes))
    return index


def _read(path: Path) -> tuple[dict, SplitIndex] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            index = SplitIndex(
                meta["folder"],
                tuple(meta["classes"]),
                data["targets"],
                data["blob"],
                data["offsets"],
                int(meta.get("other_files", 0)),
                tuple(meta.get("other_examples", ())),
            )
        meta.pop("other_files", None)
        meta.pop("other_examples", None)
        return meta, index
    except Exception as e:  # an unreadable cache file is rebuilt, never fatal
        log.warning("ignoring the unreadable index cache %s (%s)", path, e)
        return None


def _write(path: Path, index: SplitIndex, meta: dict) -> None:
    others = {"other_files": index.other_files, "other_examples": list(index.other_examples)}
    header = json.dumps(meta | others).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                meta=np.frombuffer(header, dtype=np.uint8),
                targets=index.targets,
                blob=index.blob,
                offsets=index.offsets,
            )
    except OSError as e:  # a read-only cache folder
        log.warning("could not save the file index to %s (%s); the next start walks again", path, e)

"""List the unreadable images of a tree: ``python -m cnnzoo.data.verify ROOT [--workers N]``.

Every image file below ROOT (by extension) is fully decoded with the decoder training uses
(``--decoder``, ``data.decoder``'s default: TorchCodec, PIL for what it cannot read), in
parallel worker processes, with a progress bar on stderr. Unreadable files go to stdout, one
``PATH<TAB>REASON`` line each, sorted; the exit status is 1 when there are any, so
``verify ROOT > bad.txt`` makes a list to act on.
"""

import argparse
import functools
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from cnnzoo.data.images import BadImageError, load_image
from cnnzoo.data.index import IMAGE_EXTENSIONS, file_identity, walk_once
from cnnzoo.data.options import DECODERS, DEFAULT_DECODER


def image_files(root: Path) -> list[str]:
    """The image files below ``root``, links followed but no folder twice (no cycles)."""
    found = []
    for _, _, entries in walk_once(root, {file_identity(root)}, []):
        found += [
            e.path
            for e in entries
            if e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith(".")
        ]
    return sorted(found)


def check(paths: list[str], decoder: str = DEFAULT_DECODER) -> list[tuple[str, str]]:
    """(path, reason) of the files in ``paths`` that do not decode."""
    bad = []
    for path in paths:
        try:
            load_image(path, decoder)
        except BadImageError as e:
            bad.append((path, e.reason))
    return bad


def verify(
    root: Path, workers: int, chunk: int = 256, decoder: str = DEFAULT_DECODER
) -> tuple[int, list[tuple[str, str]]]:
    """(images checked, unreadable (path, reason) sorted by path)."""
    files = image_files(root)
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    bad: list[tuple[str, str]] = []
    with Progress(console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(f"verifying {escape(str(root))}", total=len(files))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(functools.partial(check, decoder=decoder), chunks)
            for paths, result in zip(chunks, results, strict=True):
                bad += result
                progress.advance(task, len(paths))
    return len(files), sorted(bad)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnzoo.data.verify", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("root", type=Path, help="a folder tree of images (e.g. IMAGENET_ROOT)")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes (all CPUs)"
    )
    parser.add_argument(
        "--decoder", choices=DECODERS, default=DEFAULT_DECODER, help="as data.decoder"
    )
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a folder", file=sys.stderr)
        return 2
    total, bad = verify(args.root, max(1, args.workers), decoder=args.decoder)
    for path, reason in bad:
        print(f"{path}\t{reason}")
    print(f"{total} images checked, {len(bad)} unreadable", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""A CIFAR-10 ImageFolder (train/<class>/*, test/<class>/*, as a folder or tar archive) rewritten as an
archive in the official python layout, cifar-10-python.tar.gz, so that `bench prepare data.name=cifar10`
reads it through the official reader, pinned by its md5:

    python benchmarks/cifar10_official.py SRC/cifar10-jpeg.tar.gz OUT/cifar-10-python.tar.gz   # prints the md5
    bench prepare data.name=cifar10 data.source=OUT/cifar-10-python.tar.gz data.md5=MD5

The pixels are the source's decoded images: from a JPEG copy they differ from the original CIFAR-10's,
and so do the md5 and the accuracies. Labels follow CIFAR-10's label order, which is alphabetical.
"""

from __future__ import annotations

import argparse
import gzip
import io
import pickle
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.prepare.readers import CIFAR, file_md5, read_imagefolder  # noqa: E402

# batches.meta's label_names in the official archive, in label order
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPEC = CIFAR["cifar10"]  # the official archive's folder, batch names and keys


def write_official(path: Path, train_x, train_y, test_x, test_y, compresslevel: int) -> None:
    """Five training batches and a test batch, pickled dicts of flat uint8 rows (N, 3072), and batches.meta."""
    parts = np.array_split(np.arange(len(train_y)), len(SPEC.train))
    batches = [(name, train_x[i], train_y[i]) for name, i in zip(SPEC.train, parts)]
    # gzip's header holds a time and a file name unless told otherwise: both fixed, so the md5 repeats
    with (
        open(path, "wb") as f,
        gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=compresslevel, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, x, y in [*batches, (SPEC.test, test_x, test_y)]:
            batch = {
                b"batch_label": name.encode(),
                SPEC.label_key: [int(v) for v in y],
                b"data": np.asarray(x, np.uint8).reshape(len(x), -1),
                b"filenames": [f"{i:05d}.png".encode() for i in range(len(x))],
            }
            _add(tar, f"{SPEC.folder}/{name}", pickle.dumps(batch))
        _add(tar, f"{SPEC.folder}/{SPEC.meta}", pickle.dumps({SPEC.names_key: [c.encode() for c in LABELS]}))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # mtime 0, owner root: the same bytes on any machine at any time
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def convert(source: Path, out: Path, compresslevel: int = 1) -> str:
    """Write `out` from the ImageFolder at `source`; return its md5."""
    raw = read_imagefolder(source, None, max_image_pixels=32 * 32, max_total_pixels=61_440_000)
    if raw.classes != LABELS:
        raise ValueError(f"{source}: classes {raw.classes} are not CIFAR-10's {LABELS}")
    if raw.train_x.shape[1:] != (3, 32, 32):
        raise ValueError(f"{source}: images of shape {raw.train_x.shape[1:]}, not CIFAR-10's (3, 32, 32)")
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")  # whole or not at all
    write_official(part, raw.train_x, raw.train_y, raw.test_x, raw.test_y, compresslevel)
    part.replace(out)
    return file_md5(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="the ImageFolder: a folder or a tar archive")
    ap.add_argument("out", type=Path, help="the official-layout archive to write")
    ap.add_argument("--compresslevel", type=int, default=1, help="gzip level, 1 (fast) to 9 (small)")
    a = ap.parse_args()
    start = time.perf_counter()
    try:
        md5 = convert(a.source, a.out, a.compresslevel)
    except ValueError as e:
        raise SystemExit(f"cifar10_official.py: {e}") from None
    print(
        f"wrote {a.out} ({a.out.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - start:.0f} s), md5 {md5}",
        file=sys.stderr,
    )
    print(md5)


if __name__ == "__main__":
    main()

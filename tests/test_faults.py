"""Bad input refused with exit 2, named, changing nothing; faults midway: a full or read-only disk, kills, downloads."""

import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from archives import random_cifar, write_imagefolder
from helpers import DIGITS, PARAMS, PROBE, QUICK, snapshot

from bench import config, files
from bench.prepare import readers
from bench.prepare import stage as prepare
from bench.record import Cell
from bench.train.stage import train

CELL = ["--variant", "plain", "--depth", "8", "--seed", "0"]
SENTINEL = Path("/tmp/bench-pickle-payload-ran")


class Payload:
    def __reduce__(self):
        return os.system, (f"touch {SENTINEL}",)


def cifar_members(batch=None, meta=None) -> dict[str, bytes]:
    """An official-layout CIFAR-10 archive's members, one batch or the meta file replaced."""
    rng = np.random.default_rng(0)
    good = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 20))}
    spec = readers.CIFAR["cifar10"]
    members = {n: pickle.dumps(good) for n in (*spec.train, spec.test)}
    members[spec.meta] = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]})
    if batch is not None:
        members[spec.train[0]] = batch
    if meta is not None:
        members[spec.meta] = meta
    return {f"{spec.folder}/{n}": data for n, data in members.items()}


def write_tar(path: Path, members: dict[str, bytes], links: dict[str, tuple[str, bytes]] = (), dirs=()) -> Path:
    """A tar.gz of `members` (name: bytes), plus links (name: (target, tar type)) and empty folders."""
    with tarfile.open(path, "w:gz") as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (target, kind) in dict(links).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return path


def imagefolder_tar(ws: Path, extra: dict = (), links=(), dirs=()) -> Path:
    root = write_imagefolder(ws / "if-src", classes=("cat", "dog"), per_class=(4, 2))
    members = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}
    return write_tar(ws / "images.tar.gz", {**members, **dict(extra)}, links, dirs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits_dir):
    """A finished cell (20 steps) and its prepared data, made once; each test works on a copy."""
    ws = tmp_path_factory.mktemp("finished")
    p = config.load(PARAMS, ["trainer.accelerator=cpu", "wandb.mode=disabled", *DIGITS, *PROBE, "train.max_steps=20"])
    train(p, Cell("plain", 8, 0), ws / "runs/plain-8-0", digits_dir, progress=False)
    shutil.copytree(digits_dir, ws / "data")
    return ws


@pytest.fixture
def ws(tmp_path, finished):
    shutil.copytree(finished, tmp_path / "ws")
    return tmp_path / "ws"


def train_args(ws, *overrides):
    return [
        "train",
        *CELL,
        "--out",
        ws / "runs/plain-8-0",
        "--data",
        ws / "data",
        *QUICK,
        "train.max_steps=20",
        *overrides,
    ]


def prepare_args(ws, *overrides):
    return ["prepare", "--out", ws / "data", "--raw", ws / "raw", *overrides]


def cifar_args(ws, members, *overrides):
    path = write_tar(ws / "bad-cifar.tar.gz", members)
    return prepare_args(
        ws,
        "data.name=cifar10",
        f"data.source={path}",
        f"data.md5={readers.file_md5(path)}",
        "data.val_size=2",
        *overrides,
    )


def dup_params(ws):
    path = ws / "dup.yaml"
    path.write_text(PARAMS.read_text() + "\ntrain:\n  lr: 0.2\n")
    return train_args(ws, "--params", path)


def corrupt(path: Path, text: str = "{not json"):
    path.write_text(text)
    return path


def imagefolder_with_a_symlink(ws):
    root = write_imagefolder(ws / "if-src", classes=("cat", "dog"), per_class=(4, 2))
    (root / "train/cat/link.png").symlink_to(root / "train/cat/000.png")
    return prepare_args(ws, "data.name=imagefolder", "data.val_size=1", f"data.source={root}")


def plant_payload(path: Path) -> bool:
    """A checkpoint whose unpickling runs a command (torch.load with weights_only=False would run it)."""
    torch.save({"global_step": 1, "hyper_parameters": {"run_key": Payload()}}, path)
    return True


def another_params_file(ws, command):
    shutil.copy(PARAMS, ws / "other.yaml")
    return [command, "--params", ws / "other.yaml"]


def edit_meta(ws, **fields):
    """The prepared data's meta.json with `fields` replaced; the arguments of a `bench train` that loads it."""
    import json

    meta = json.loads((ws / "data/meta.json").read_text())
    (ws / "data/meta.json").write_text(json.dumps({**meta, **fields}))
    return train_args(ws)


def edit_images(ws, **arrays):
    """The prepared data's images.npz with `arrays` replaced; the arguments of a `bench train` that loads it."""
    with np.load(ws / "data/images.npz") as z:
        saved = {k: z[k] for k in z.files}
    np.savez(ws / "data/images.npz", **{**saved, **arrays})
    return train_args(ws)


def planted_lock_link(ws):
    """The cell's lock file replaced by a link to the prepared data's meta.json, which a PID must not overwrite."""
    (ws / "runs/plain-8-0" / files.LOCK).unlink(missing_ok=True)
    (ws / "runs/plain-8-0" / files.LOCK).symlink_to(ws / "data/meta.json")
    return train_args(ws)


def zero_stride(ws):
    from archives import zero_stride_batch

    return cifar_args(ws, cifar_members(batch=zero_stride_batch()))


def batch(data, labels) -> bytes:
    return pickle.dumps({b"data": data, b"labels": labels})


def imagefolder_with(ws, make):
    root = write_imagefolder(ws / "if-src", classes=("cat", "dog"), per_class=(4, 2))
    make(root / "train/cat/x.png")
    return prepare_args(ws, "data.name=imagefolder", "data.val_size=1", f"data.source={root}")


def a_zip(ws, *overrides):
    import zipfile

    with zipfile.ZipFile(ws / "images.zip", "w") as z:
        z.writestr("train/cat/0.png", b"x")
    return prepare_args(ws, f"data.source={ws / 'images.zip'}", "data.val_size=1", *overrides)


# (id, the command's arguments from the workspace, a fragment of the message, {ws}: the workspace). Every row:
# exit 2, and the workspace (the finished cell, the prepared data, the inputs) byte for byte as it was.
BAD_INPUTS = [
    # prepared data, archives and files
    ("val_indices past the images", lambda ws: edit_meta(ws, val_indices=[0, 99999]), "val_indices is not distinct"),
    ("val_indices repeated", lambda ws: edit_meta(ws, val_indices=[3, 3]), "meta.json: val_indices is not distinct"),
    ("val_indices text", lambda ws: edit_meta(ws, val_indices="all"), "{ws}/data/meta.json: val_indices is not"),
    ("classes not a list", lambda ws: edit_meta(ws, classes=5), "meta.json: classes is not a list of class names"),
    ("classes too few", lambda ws: edit_meta(ws, classes=["0", "1"]), "classes is 2 names for labels up to 9"),
    ("mean text", lambda ws: edit_meta(ws, mean="x"), "meta.json: mean is 'x', not 1 finite numbers"),
    ("mean of 2 channels", lambda ws: edit_meta(ws, mean=[0.1, 0.2]), "meta.json: mean is [0.1, 0.2], not 1 finite"),
    ("std 0", lambda ws: edit_meta(ws, std=[0]), "meta.json: std is [0], not 1 finite numbers above 0"),
    ("std NaN", lambda ws: edit_meta(ws, std=[float("nan")]), "meta.json: std is [nan], not 1 finite numbers"),
    ("pad -1", lambda ws: edit_meta(ws, pad=-1), "meta.json: pad is -1, not a count of pixels"),
    ("pad text", lambda ws: edit_meta(ws, pad="4"), "meta.json: pad is '4', not a count of pixels"),
    ("flip text", lambda ws: edit_meta(ws, flip="yes"), "meta.json: flip is 'yes', not true or false"),
    (
        "float images",
        lambda ws: edit_images(ws, train_x=np.zeros((1437, 1, 8, 8), np.float32)),
        "{ws}/data/images.npz: train_x is torch.float32 (1437, 1, 8, 8), not uint8",
    ),
    (
        "test images of another size",
        lambda ws: edit_images(ws, test_x=np.zeros((360, 1, 9, 9), np.uint8)),
        "images.npz: test_x is torch.uint8 (360, 1, 9, 9), not uint8 (N, *[1, 8, 8])",
    ),
    (
        "float labels",
        lambda ws: edit_images(ws, test_y=np.zeros(360, np.float64)),
        "images.npz: test_y is torch.float64 (360,), not int64 labels",
    ),
    ("lock file a link", planted_lock_link, "plain-8-0/.bench.lock cannot be opened as a lock file"),
    (
        "--out a file",
        lambda ws: ["prepare", "--out", ws / "data/meta.json", *DIGITS],
        "--out {ws}/data/meta.json is a file, not a folder",
    ),
    (
        "--out a link",
        lambda ws: ["prepare", "--out", ws / "link", *DIGITS] if (ws / "link").symlink_to(ws / "data") is None else 0,
        "--out {ws}/link is a symbolic link",
    ),
    ("zip ImageFolder", lambda ws: a_zip(ws, "data.name=imagefolder"), "images.zip is a zip archive, not a tar"),
    (
        "zip CIFAR",
        lambda ws: a_zip(ws, "data.name=cifar10", f"data.md5={readers.file_md5(a_zip(ws) and ws / 'images.zip')}"),
        "images.zip is a zip archive, not a tar",
    ),
    (
        "CIFAR float pixels",
        lambda ws: cifar_args(ws, cifar_members(batch=batch(np.zeros((20, 3072), np.float32), [1] * 20))),
        "data_batch_1: field data is float32, not uint8 pixels",
    ),
    (
        "CIFAR negative pixels",
        lambda ws: cifar_args(ws, cifar_members(batch=batch(np.full((20, 3072), -1, np.int8), [1] * 20))),
        "data_batch_1: field data is int8, not uint8 pixels",
    ),
    (
        "CIFAR pixels over 255",
        lambda ws: cifar_args(ws, cifar_members(batch=batch(np.full((20, 3072), 300), [1] * 20))),
        "data_batch_1: field data is int64, not uint8 pixels",
    ),
    (
        "CIFAR float labels",
        lambda ws: cifar_args(ws, cifar_members(batch=batch(np.zeros((20, 3072), np.uint8), [1.0] * 20))),
        "data_batch_1: field labels is not a list of integer labels",
    ),
    (
        "CIFAR text labels",
        lambda ws: cifar_args(ws, cifar_members(batch=batch(np.zeros((20, 3072), np.uint8), [b"1"] * 20))),
        "data_batch_1: field labels is not a list of integer labels",
    ),
    (
        "CIFAR label 2^70",
        lambda ws: cifar_args(ws, cifar_members(batch=batch(np.zeros((20, 3072), np.uint8), [2**70] * 20))),
        f"field labels holds labels {2**70}..{2**70} for 10 classes",
    ),
    (
        "CIFAR class names not UTF-8",
        lambda ws: cifar_args(ws, cifar_members(meta=pickle.dumps({b"label_names": [b"\xff"] * 10}))),
        "batches.meta field label_names: a class name is not UTF-8",
    ),
    (
        "CIFAR numpy.ndarray called",
        zero_stride,
        "data_batch_1 is not a CIFAR pickle (UnpicklingError: refusing a call of numpy.ndarray",
    ),
    (
        "CIFAR object array",
        lambda ws: cifar_args(ws, cifar_members(batch=batch(np.array([1, "x"], dtype=object), [1] * 20))),
        "refusing a numpy array of dtype object",
    ),
    ("FIFO in a folder", lambda ws: imagefolder_with(ws, os.mkfifo), "train/cat/x.png is not a regular file"),
    (
        "FIFO in a tar",
        lambda ws: prepare_args(
            ws,
            "data.name=imagefolder",
            "data.val_size=1",
            f"data.source={imagefolder_tar(ws, links={'train/cat/x.png': ('', tarfile.FIFOTYPE)})}",
        ),
        "train/cat/x.png is not a regular file (a FIFO or device)",
    ),
    (
        "member over the byte budget",
        lambda ws: prepare_args(
            ws,
            "data.name=imagefolder",
            "data.val_size=1",
            f"data.source={imagefolder_tar(ws, extra={'train/cat/big.png': bytes(2 << 20)})}",
            "data.max_image_pixels=100",
        ),
        "train/cat/big.png is over 1049376 bytes, more than data.max_image_pixels=100 allows",
    ),
    (
        "URL naming no file",
        lambda ws: prepare_args(ws, "data.name=imagefolder", "data.source=https://alice:s3cret@example.org/"),
        "data.source https://***@example.org/ names no file to download",
    ),
    # the cell
    ("unknown variant", lambda ws: train_args(ws, "--variant", "resnet"), "unknown variant 'resnet'"),
    ("depth not 6n+2", lambda ws: train_args(ws, "--depth", "21"), "depth 21 is not 6n+2"),
    ("unknown shortcut", lambda ws: train_args(ws, "model.shortcut=option_c"), "unknown shortcut 'option_c'"),
    # params: names, types, ranges
    ("unknown key", lambda ws: train_args(ws, "train.lrr=0.1"), "unknown key train.lrr"),
    ("malformed override", lambda ws: train_args(ws, "grid.depths=[20,"), "is not a YAML value"),
    ("text for a number", lambda ws: train_args(ws, "train.lr=fast"), "train.lr: expected float"),
    ("duplicate key", dup_params, "duplicate key 'train'"),
    ("missing params file", lambda ws: train_args(ws, "--params", ws / "nope.yaml"), "not found"),
    ("batch 0", lambda ws: train_args(ws, "train.batch_size=0"), "train.batch_size=0 must be at least 1"),
    ("batch -4", lambda ws: train_args(ws, "train.batch_size=-4"), "train.batch_size=-4 must be at least 1"),
    ("batch over the images", lambda ws: train_args(ws, "train.batch_size=5000"), "exceeds the 1293 training"),
    ("max_steps 0", lambda ws: train_args(ws, "train.max_steps=0"), "train.max_steps=0 must be at least 1"),
    ("max_steps -5", lambda ws: train_args(ws, "train.max_steps=-5"), "train.max_steps=-5 must be at least 1"),
    ("lr -0.1", lambda ws: train_args(ws, "train.lr=-0.1"), "train.lr=-0.1 must be above 0"),
    ("lr nan", lambda ws: train_args(ws, "train.lr=.nan"), "train.lr=nan must be a finite number"),
    ("lr inf", lambda ws: train_args(ws, "train.lr=.inf"), "train.lr=inf must be a finite number"),
    ("momentum 1", lambda ws: train_args(ws, "train.momentum=1"), "must be at least 0 and below 1"),
    ("log every 0", lambda ws: train_args(ws, "trainer.log_every_n_steps=0"), "log_every_n_steps=0 must be at least 1"),
    ("probe of 0", lambda ws: train_args(ws, "diagnostics.probe_size=0"), "probe_size=0 must be at least 2"),
    ("devices 0", lambda ws: train_args(ws, "trainer.devices=0"), "trainer.devices=0 must be a count"),
    (
        "autotuned yet deterministic",
        lambda ws: train_args(ws, "trainer.benchmark=true"),
        "trainer.benchmark=true with trainer.deterministic=true",
    ),
    (
        "empty grid",
        lambda ws: ["report", "--runs", ws / "runs", "--out", ws / "report", "grid.depths=[]"],
        "grid.depths is empty",
    ),
    ("speed.compile", lambda ws: train_args(ws, "speed.compile=fast"), "speed.compile='fast' is not"),
    ("wandb.mode", lambda ws: train_args(ws, "wandb.mode=cloud"), "unknown wandb.mode 'cloud'"),
    # Lightning's flags, checked before the cell's checkpoint is looked at
    ("precision typo", lambda ws: train_args(ws, "trainer.precision=bogus"), "Precision 'bogus' is invalid"),
    ("no GPU", lambda ws: train_args(ws, "trainer.accelerator=gpu"), "Lightning cannot run trainer.accelerator=gpu"),
    ("strategy typo", lambda ws: train_args(ws, "trainer.strategy=bogus"), "invalid strategy name"),
    (
        "batch not dividing",
        lambda ws: train_args(ws, "train.batch_size=127", "trainer.devices=2", "trainer.strategy=ddp"),
        "train.batch_size=127 does not divide across 2 processes",
    ),
    # the stages' own params file
    ("grid with another params file", lambda ws: another_params_file(ws, "grid"), "reads params.yaml, not"),
    ("slurm with another params file", lambda ws: another_params_file(ws, "slurm"), "reads params.yaml, not"),
    # files
    ("stale data", lambda ws: train_args(ws, "data.val_size=100"), "is stale (data.val_size=100 but prepared 144)"),
    (
        "stale data md5",
        lambda ws: train_args(ws, "data.md5=" + "0" * 32),
        "is stale (data.md5='" + "0" * 32 + "' but prepared",
    ),
    ("no prepared data", lambda ws: train_args(ws, "--data", ws / "nothing"), "no prepared data at {ws}/nothing"),
    ("--out is a file", lambda ws: train_args(ws, "--out", ws / "runs/plain-8-0/metrics.json"), "is a file"),
    (
        "meta.json invalid",
        lambda ws: train_args(ws) if corrupt(ws / "data/meta.json") else None,
        "meta.json is not what bench prepare writes",
    ),
    (
        "images.npz truncated",
        lambda ws: train_args(ws) if corrupt(ws / "data/images.npz", "PK") else None,
        "images.npz cannot be read",
    ),
    (
        "history.csv invalid on resume",
        lambda ws: train_args(ws) if corrupt(ws / "runs/plain-8-0/history.csv", "epoch,step\nx,y\n") else None,
        "history.csv cannot be read to resume",
    ),
    (
        "a checkpoint that holds code",
        lambda ws: train_args(ws) if plant_payload(ws / "runs/plain-8-0/last.ckpt") else None,
        "last.ckpt holds objects other than weights",
    ),
    ("two nodes outside a cluster", lambda ws: train_args(ws, "trainer.num_nodes=2"), "trainer.num_nodes=2 outside a"),
    (
        "metrics.json invalid",
        lambda ws: (
            [
                "report",
                "--runs",
                ws / "runs",
                "--out",
                ws / "report",
                *DIGITS,
                "grid.variants=[plain]",
                "grid.depths=[8]",
                "grid.seeds=[0]",
            ]
            if corrupt(ws / "runs/plain-8-0/metrics.json")
            else None
        ),
        "{ws}/runs/plain-8-0 is not a finished cell (JSONDecodeError",
    ),
    (
        "a cell missing",
        lambda ws: ["report", "--runs", ws / "runs", "--out", ws / "report"],
        "no results for cell plain-8-1",  # plain-8-0 is there
    ),
    # archives
    (
        "wrong md5",
        lambda ws: (
            prepare_args(ws, "data.name=cifar10", f"data.source={ws / 'c.tar.gz'}", "data.md5=" + "a" * 32)
            if random_cifar(ws / "c.tar.gz")
            else None
        ),
        "checksum mismatch for {ws}/c.tar.gz: expected md5 " + "a" * 32 + ", got ",
    ),
    (
        "pickle payload",
        lambda ws: cifar_args(ws, cifar_members(batch=pickle.dumps({b"data": Payload()}))),
        "refusing posix.system",
    ),
    (
        "pickle naming a missing module",
        lambda ws: cifar_args(ws, cifar_members(batch=b"cnosuch\nthing\n.")),  # protocol 0: the global nosuch.thing
        "refusing nosuch.thing",
    ),
    (
        "labels out of range",
        lambda ws: cifar_args(
            ws, cifar_members(batch=pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [12] * 20}))
        ),
        "..12 for 10 classes",
    ),
    (
        "fewer labels than images",
        lambda ws: cifar_args(
            ws, cifar_members(batch=pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [1] * 19}))
        ),
        "the official layout is (N, 3072) and (N,)",
    ),
    (
        "meta without names",
        lambda ws: cifar_args(ws, cifar_members(meta=pickle.dumps({b"other": []}))),
        "lacks its class names",
    ),
    (
        "symlink in a tar",
        lambda ws: prepare_args(
            ws,
            "data.name=imagefolder",
            "data.val_size=1",
            f"data.source={imagefolder_tar(ws, links={'train/cat/x.png': ('/etc/passwd', tarfile.SYMTYPE)})}",
        ),
        "is a symbolic link",
    ),
    ("symlink in a folder", imagefolder_with_a_symlink, "is a symbolic link"),
    (
        "'..' class in a tar",
        lambda ws: prepare_args(
            ws,
            "data.name=imagefolder",
            "data.val_size=1",
            f"data.source={imagefolder_tar(ws, extra={'train/../x.png': b'x'})}",
        ),
        "is not in the train/<class>/<image>",
    ),
    (
        "empty class in a tar",
        lambda ws: prepare_args(
            ws, "data.name=imagefolder", "data.val_size=1", f"data.source={imagefolder_tar(ws, dirs=['train/bird'])}"
        ),
        "train/bird holds no images",
    ),
    (
        "image over the pixel budget",
        lambda ws: prepare_args(
            ws,
            "data.name=imagefolder",
            "data.val_size=1",
            f"data.source={imagefolder_tar(ws)}",
            "data.max_image_pixels=100",
        ),
        "is 12 x 12 pixels, over data.max_image_pixels=100",
    ),
    (
        "dataset over the pixel budget",
        lambda ws: prepare_args(
            ws,
            "data.name=imagefolder",
            "data.val_size=1",
            f"data.source={imagefolder_tar(ws)}",
            "data.max_total_pixels=1000",
        ),
        "over data.max_total_pixels=1000",
    ),
    # params: bounds, machines and YAML
    (
        "alias bomb in the params file",
        lambda ws: with_params(ws, ALIAS_BOMB),
        "bad.yaml: anchors and aliases (&name, *name) are not supported in params files",
    ),
    (
        "alias bomb in an override",
        lambda ws: train_args(ws, f"train.lr={ALIAS_BOMB}"),
        "anchors and aliases (&name, *name) are not supported in params",
    ),
    (
        "alias bomb in a preset",
        lambda ws: ["preset", with_params(ws, ALIAS_BOMB)[-1], "--params", PARAMS],
        "bad.yaml: anchors and aliases (&name, *name) are not supported in params files at line 1",
    ),
    (
        "merge key in the params file",
        lambda ws: with_params(ws, "train:\n  lr: 0.1\n  <<: {momentum: 0.5}\n"),
        "bad.yaml: merge keys (<<) are not supported in params files at line 3",
    ),
    (
        "merge key in an override",
        lambda ws: train_args(ws, "train.milestones={<<: {a: 1}}"),
        "merge keys (<<) are not supported in params",
    ),
    (
        "null section",
        lambda ws: with_params(ws, null_section("train")),
        "error: train: expected a mapping of keys, got None",
    ),
    ("a section overridden whole", lambda ws: train_args(ws, "train=null"), "a whole section is not overridden"),
    (
        "long value cut",
        lambda ws: train_args(ws, f"train.lr=[{'1,' * 10**3}1]"),
        "train.lr: expected float, got [1, 1, 1",
    ),
    ("seeds repeated", lambda ws: report_args(ws, "grid.seeds=[0,0,0]"), "grid.seeds=[0, 0, 0] holds 0 twice"),
    ("depths repeated", lambda ws: report_args(ws, "grid.depths=[8,20,8]"), "grid.depths=[8, 20, 8] holds 8 twice"),
    ("variants repeated", lambda ws: report_args(ws, "grid.variants=[plain,plain]"), "holds 'plain' twice"),
    (
        "lrs repeated",
        lambda ws: ["lr-sweep", "--data", ws / "data", "--out", ws / "lr", "lr_sweep.lrs=[0.1,0.1]"],
        "lr_sweep.lrs=[0.1, 0.1] holds 0.1 twice",
    ),
    ("toy depths repeated", lambda ws: ["toy", "--out", ws / "toy", "toy.depths=[1,2,2]"], "holds 2 twice"),
    ("depth over 1202", lambda ws: report_args(ws, "grid.depths=[8,1208]"), "at most 1202 (each value; 1208 is not)"),
    (
        "nesterov without momentum",
        lambda ws: train_args(ws, "train.nesterov=true", "train.momentum=0"),
        "train.nesterov=true with train.momentum=0",
    ),
    ("seed -1", lambda ws: train_args(ws, "--seed", "-1"), "seed -1 must be at least 0"),
    ("seed 2**32", lambda ws: train_args(ws, "--seed", str(2**32)), "seed 4294967296 must be at least 0 and below"),
    *[
        (f"precision {p}", lambda ws, p=p: train_args(ws, f"trainer.precision={p}"), f"Precision '{p}' is invalid")
        for p in ("64-true", "16-true", "bf16-true", "transformer-engine")
    ],
    *[
        (f"accelerator {a}", lambda ws, a=a: train_args(ws, f"trainer.accelerator={a}"), f"accelerator='{a}': not an")
        for a in ("tpu", "xla")
    ],
    *[
        (f"strategy {s}", lambda ws, s=s: train_args(ws, f"trainer.strategy={s}"), f"strategy='{s}': an invalid")
        for s in ("ddp_notebook", "ddp_fork")
    ],
    *[
        (f"{key} over its bound", lambda ws, key=key, v=v: train_args(ws, f"{key}={v}"), f"{key}={v} must be {bound}")
        for key, v, bound in (
            ("speed.threads", 10**5, "at least 1 and at most 1024"),
            ("diagnostics.points", 10**8, "at least 3 and at most 10000"),
            ("diagnostics.probe_size", 10**6, "at least 2 and at most 100000"),
            ("train.batch_size", 10**7, "at least 1 and at most 1048576"),
            ("train.max_steps", 10**8, "at least 1 and at most 10000000"),
            ("speed.eval_batch_size", 10**7, "at least 1 and at most 1048576"),
        )
    ],
    ("toy width over its bound", lambda ws: ["toy", "--out", ws / "toy", "toy.width=100000"], "at most 2048"),
]


def with_params(ws, text: str):
    """`bench train` with a params file of this text (bad.yaml)."""
    (ws / "bad.yaml").write_text(text)
    return train_args(ws, "--params", ws / "bad.yaml")


def report_args(ws, *overrides):
    return ["report", "--runs", ws / "runs", "--out", ws / "report", *overrides]


def null_section(name: str) -> str:
    """params.yaml with section `name` set to null (its sections are paragraphs)."""
    blocks = PARAMS.read_text().split("\n\n")
    return "\n\n".join(f"{name}: null" if b.startswith(f"{name}:") else b for b in blocks)


# "Billion laughs": nine anchors, each nine aliases of the one before, 9**9 strings in some 300 bytes
ALIAS_BOMB = (
    "[&a [l,l,l,l,l,l,l,l,l], "
    + ", ".join(f"&{b} [{','.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi"))
    + "]"
)


@pytest.mark.parametrize("name, args, message", BAD_INPUTS, ids=[r[0] for r in BAD_INPUTS])
def test_bad_input_exits_2_naming_it_and_changes_nothing(cli, ws, name, args, message):
    SENTINEL.unlink(missing_ok=True)
    argv = args(ws)  # builds the row's inputs in the workspace
    before = snapshot(ws)
    code, _, err = cli(*argv)
    assert code == 2, err
    assert message.format(ws=ws) in err, err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line
    assert snapshot(ws) == before
    assert not SENTINEL.exists()  # no pickled payload ran


def test_a_hard_link_in_a_tar_reads_like_the_file_in_the_folder(tmp_path):
    root = write_imagefolder(tmp_path / "images", classes=("cat", "dog"), per_class=(3, 1))
    shutil.copy(root / "train/cat/000.png", root / "train/dog/copy.png")  # in the folder: a plain file
    members = {
        p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png")) if p.name != "copy.png"
    }
    archive = write_tar(
        tmp_path / "images.tar.gz", members, {"train/dog/copy.png": ("train/cat/000.png", tarfile.LNKTYPE)}
    )
    cfg = lambda src: config.load(PARAMS, ["data.name=imagefolder", f"data.source={src}", "data.val_size=1"]).data
    assert prepare.prepare(cfg(root), tmp_path / "a")["md5"] == prepare.prepare(cfg(archive), tmp_path / "b")["md5"]


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_holder(cli, ws):
    before = snapshot(ws)
    with files.locked(ws / "runs/plain-8-0"):
        code, _, err = cli(*train_args(ws, "train.lr=0.03"))
    assert code == 2, err
    assert f"in use by process {os.getpid()}" in err, err
    assert snapshot(ws) == before


@pytest.fixture
def small_disk(tmp_path):
    """A 1.2 MB tmpfs: room for one checkpoint of plain-8 and its temporary copy, not much more (root only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_exits_2_and_keeps_the_last_checkpoint(cli, ws, small_disk):
    cell = small_disk / "plain-8-0"
    shutil.copytree(ws / "runs/plain-8-0", cell)
    before = (cell / "last.ckpt").read_bytes()
    (small_disk / "fill").write_bytes(b"\0" * (1200 * 1024 - sum(p.stat().st_size for p in cell.iterdir()) - 300_000))
    code, _, err = cli(*train_args(ws, "--out", cell, "train.max_steps=40"))  # resumes, then the disk fills up
    assert code == 2, err
    assert "No space left on device" in err, err
    kept = sorted(cell.glob("*.ckpt"))
    assert [k.read_bytes() == before for k in kept].count(True) == 1  # the finished checkpoint, intact
    assert not list(cell.glob(".*.tmp"))  # no temporary file left behind


def test_a_read_only_disk_exits_2_and_changes_nothing(cli, ws, small_disk):
    shutil.copytree(ws / "runs/plain-8-0", small_disk / "plain-8-0")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    before = snapshot(small_disk)
    code, _, err = cli(*train_args(ws, "--out", small_disk / "plain-8-0", "train.lr=0.03"))
    assert code == 2, err
    assert "Read-only file system" in err, err
    assert snapshot(small_disk) == before


def test_what_a_killed_prepare_left_is_restored_or_removed(ws, capsys):
    data, old, tmp = ws / "data", ws / ".data.424242.old", ws / ".data.424242.tmp"
    os.replace(data, old)  # killed between its two renames: no data/, the previous copy set aside
    tmp.mkdir()  # and an unfinished copy
    cfg = config.load(PARAMS, [*DIGITS, "data.val_size=5000"]).data  # a prepare that is then refused
    with pytest.raises(ValueError, match="data.val_size=5000"):
        prepare.prepare(cfg, data)
    said = capsys.readouterr().out
    assert "restored" in said
    assert ".data.424242.tmp" in said
    assert (data / "meta.json").exists()
    assert not old.exists()
    assert not tmp.exists()


def test_decoding_workers_end_with_a_killed_prepare(tmp_path):
    script = (
        "from concurrent.futures import ProcessPoolExecutor\nimport os, time\nfrom bench.prepare import readers\n"
        "pool = ProcessPoolExecutor(2, initializer=readers._die_with_parent)\n"
        "print('started', flush=True)\n"
        "pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
        "print(' '.join(map(str, pids)), flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(map(alive, pids)):
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended and not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_download_is_cached_only_once_its_checksum_matches(tmp_path):
    class HTML(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>a login page, not an archive</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), HTML)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()  # shutdown() waits a poll
    url = f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
    cfg = config.load(PARAMS, ["data.name=cifar10", f"data.source={url}", "data.val_size=2"]).data
    try:
        for _ in range(2):  # the same clear error each time: nothing bad was kept
            with pytest.raises(ValueError, match="checksum mismatch"):
                prepare.prepare(cfg, tmp_path / "out", tmp_path / "raw")
            assert list((tmp_path / "raw").iterdir()) == []
    finally:
        server.shutdown()


def test_what_a_killed_report_left_is_removed(ws, capsys):
    """The report stage builds beside its folder (bench.report.stage.beside), which first tidies what a killed
    report left there; a whole report through it: tests/test_report.py."""
    from bench.report.stage import beside

    (ws / ".report.424242.tmp").mkdir()
    with beside(ws / "report") as folder:
        (folder / "report.md").write_text("new")
    assert ".report.424242.tmp" in capsys.readouterr().out
    assert not (ws / ".report.424242.tmp").exists()
    assert (ws / "report/report.md").read_text() == "new"


@pytest.mark.integration
def test_a_wandb_run_that_cannot_start_costs_no_result(cli, ws, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: refused at once
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "8")
    monkeypatch.setenv("WANDB_DIR", str(ws / "wb"))
    out = ws / "runs/online"
    code, said, err = cli(
        "train",
        *CELL,
        "--out",
        out,
        "--data",
        ws / "data",
        "--no-progress",
        "trainer.accelerator=cpu",
        *DIGITS,
        "train.max_steps=10",
        "wandb.mode=online",
    )
    assert code == 0, err
    assert "W&B run could not start" in err
    assert "test error" in said
    assert (out / "metrics.json").exists()

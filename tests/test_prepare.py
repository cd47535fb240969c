"""`bench prepare` on small archives in the official CIFAR layout and on generated ImageFolder trees."""

import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch
from archives import black_pngs, random_cifar, write_imagefolder, zero_stride_batch, zeros_member
from helpers import PARAMS, bench_argv, snapshot

from bench import config, files
from bench.prepare import readers
from bench.prepare import stage as prepare
from bench.train.data import load_prepared


def data_cfg(*overrides):
    return config.load(PARAMS, list(overrides)).data


@pytest.fixture
def cifar(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    return path, random_cifar(path, n_train=200, n_test=50)


def test_cifar10_archive_prepares_with_its_checksum(tmp_path, cifar):
    path, md5 = cifar
    cfg = data_cfg("data.name=cifar10", f"data.source={path}", f"data.md5={md5}", "data.val_size=20")
    meta = prepare.prepare(cfg, tmp_path / "prepared")
    assert meta["md5"] == md5
    assert meta["counts"] == {"train": 180, "val": 20, "test": 50}
    assert meta["shape"] == [3, 32, 32]
    assert meta["classes"] == [f"class{i}" for i in range(10)]
    assert meta["flip"]
    assert meta["pad"] == 4
    assert len(meta["val_indices"]) == 20
    d = load_prepared(tmp_path / "prepared", cfg)
    assert len(d.train.y) == 180
    assert len(d.val.y) == 20
    assert len(d.test.y) == 50
    # the images are the archive's own rows, in order
    with tarfile.open(path) as tar:
        import pickle

        test = pickle.loads(tar.extractfile("cifar-10-batches-py/test_batch").read(), encoding="bytes")
    assert torch.equal(d.test.x, torch.from_numpy(test[b"data"].reshape(-1, 3, 32, 32)))
    x = np.concatenate([d.train.x.numpy()]).astype(np.float64) / 255
    assert np.allclose(meta["mean"], x.mean(axis=(0, 2, 3)))
    assert np.allclose(meta["std"], x.std(axis=(0, 2, 3)))


def test_cifar100_archive(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    md5 = random_cifar(path, "cifar100", n_train=120, n_test=30)
    meta = prepare.prepare(
        data_cfg("data.name=cifar100", f"data.source={path}", f"data.md5={md5}", "data.val_size=10"), tmp_path / "p"
    )
    assert len(meta["classes"]) == 100
    assert meta["counts"]["test"] == 30


def test_official_checksum_is_the_default(tmp_path, cifar):
    path, md5 = cifar
    with pytest.raises(ValueError, match=f"expected md5 {readers.CIFAR['cifar10'].md5}, got {md5}"):
        prepare.prepare(data_cfg("data.name=cifar10", f"data.source={path}", "data.val_size=20"), tmp_path / "p")


@pytest.fixture
def previous(tmp_path, digits_dir):
    """A previously prepared folder, whose bytes must survive every refused prepare."""
    out = tmp_path / "prepared"
    shutil.copytree(digits_dir, out)
    return out, snapshot(out)


def assert_untouched(previous):
    out, before = previous
    assert snapshot(out) == before
    hidden = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert hidden in ([], [f".{out.name}.lock"])  # no temp folder left; the lock's folder may be


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return readers.file_md5(path)


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[100:400] = bytes(300)
    path.write_bytes(bytes(data))
    return readers.file_md5(path)


@pytest.mark.parametrize(
    "damage,message",
    [
        (truncate, "not a readable CIFAR archive"),
        (corrupt, "not a readable (CIFAR archive|tar)"),
        (lambda p: random_cifar(p, skip=("data_batch_3",)), "missing cifar-10-batches-py/data_batch_3"),
        (lambda p: random_cifar(p, skip=("batches.meta",)), "missing cifar-10-batches-py/batches.meta"),
    ],
)
def test_bad_cifar_archives_fail_cleanly_and_keep_previous_outputs(cifar, previous, damage, message):
    path, _ = cifar
    md5 = damage(path)
    cfg = data_cfg("data.name=cifar10", f"data.source={path}", f"data.md5={md5}", "data.val_size=20")
    with pytest.raises(ValueError, match=message):
        prepare.prepare(cfg, previous[0])
    assert_untouched(previous)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_imagefolder_prepares_from_a_folder_and_its_archive(tmp_path, fmt):
    root = write_imagefolder(tmp_path / "images", fmt=fmt)
    meta = prepare.prepare(data_cfg("data.name=imagefolder", f"data.source={root}", "data.val_size=3"), tmp_path / "p")
    assert meta["classes"] == ["cat", "dog", "frog"]
    assert meta["shape"] == [3, 12, 12]
    assert meta["counts"] == {"train": 15, "val": 3, "test": 9}
    d = load_prepared(tmp_path / "p", data_cfg("data.name=imagefolder", f"data.source={root}", "data.val_size=3"))
    assert sorted(d.test.y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    if fmt == "PNG":  # lossless: pixels of class c lie in [60c, 60c + 60)
        assert all(60 * y <= x.min() and x.max() < 60 * y + 60 for x, y in zip(d.test.x, d.test.y))
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    again = prepare.prepare(
        data_cfg("data.name=imagefolder", f"data.source={archive}", f"data.md5={meta['md5']}", "data.val_size=3"),
        tmp_path / "q",
    )
    assert again["md5"] == meta["md5"]  # the checksum is of the content, archived or not
    assert np.array_equal(np.load(tmp_path / "p/images.npz")["train_x"], np.load(tmp_path / "q/images.npz")["train_x"])


def mixed_sizes(root):
    from PIL import Image

    Image.new("RGB", (10, 12)).save(root / "train/dog/odd.png")


def unreadable(root):
    (root / "train/cat/broken.png").write_bytes(b"not a png")


def empty_class(root):
    (root / "train/zebra").mkdir()


def drop_test_class(root):
    shutil.rmtree(root / "test/frog")


@pytest.mark.parametrize(
    "damage,message",
    [
        (mixed_sizes, "images differ in size.*odd.png"),
        (unreadable, "unreadable image train/cat/broken.png"),
        (empty_class, "class folder .*train/zebra holds no images"),
        (drop_test_class, r"test classes \['cat', 'dog'\] differ from train classes"),
        (lambda root: None, "checksum mismatch.*expected content md5 f{32}"),
    ],
)
def test_bad_imagefolders_fail_cleanly_and_keep_previous_outputs(tmp_path, previous, damage, message):
    root = write_imagefolder(tmp_path / "images")
    damage(root)
    md5 = ["data.md5=" + "f" * 32] if "checksum" in message else []
    cfg = data_cfg("data.name=imagefolder", f"data.source={root}", "data.val_size=3", *md5)
    with pytest.raises(ValueError, match=message):
        prepare.prepare(cfg, previous[0])
    assert_untouched(previous)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.name=imagenet"], "unknown dataset 'imagenet'; valid datasets: digits, cifar10, cifar100, imagefolder"),
        (
            ["data.name=cifar10", "data.source=/no/such/cifar.tar.gz"],
            "data.source /no/such/cifar.tar.gz does not exist",
        ),
        (["data.name=imagefolder"], "data.source is required"),
        (
            ["data.name=digits", "data.source=null", "data.val_size=5000"],
            f"data.val_size=5000 must be between 0 and the {1797 - readers.DIGITS_TEST}",
        ),  # 1,797 digits in all
    ],
)
def test_bad_names_and_sources(tmp_path, previous, overrides, message):
    with pytest.raises(ValueError, match=message):
        prepare.prepare(data_cfg(*overrides), previous[0])
    assert_untouched(previous)


def test_interrupted_prepare_keeps_previous_outputs(previous, monkeypatch):
    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(data_cfg(), previous[0])
    assert_untouched(previous)


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(prepare.time, "sleep", waits.append)
    with pytest.raises(ValueError, match="could not download http://127.0.0.1:9/cifar.tar.gz after 3 tries.*Offline"):
        prepare.download("http://127.0.0.1:9/cifar.tar.gz", tmp_path / "cifar.tar.gz", md5=None, retries=3)
    assert waits == [1, 2]  # backs off between tries, not after the last
    assert list(tmp_path.iterdir()) == []


def test_meta_json_is_small_and_readable(digits_dir):
    meta = json.loads((digits_dir / "meta.json").read_text())
    assert set(meta) >= {"name", "md5", "classes", "counts", "val_indices", "mean", "std"}
    assert len((digits_dir / "meta.json").read_text().splitlines()) < 40


# --- hostile inputs: bombs, concurrent and killed runs, downloads ---

MEASURE = (  # runs its arguments as a child, its address space capped at 4 GiB, and prints the child's peak RSS
    "import resource, subprocess, sys\n"
    "cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
    "r = subprocess.run(sys.argv[1:], preexec_fn=cap, capture_output=True, text=True, timeout=60)\n"
    "sys.stderr.write(r.stderr)\n"
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"  # KiB on Linux
)


def cifar_with_batch(path, batch: bytes):
    """A CIFAR-10 archive whose first training batch is `batch`; returns its data.source and data.md5 overrides."""
    random_cifar(path, n_train=50, n_test=10)
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    members["cifar-10-batches-py/data_batch_1"] = batch
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, __import__("io").BytesIO(data))
    return ["data.name=cifar10", f"data.source={path}", f"data.md5={readers.file_md5(path)}", "data.val_size=2"]


def special_file(tmp_path, make):
    root = write_imagefolder(tmp_path / "images", classes=("cat", "dog"), per_class=(4, 2))
    make(root / "train/cat/x.png")
    return ["data.name=imagefolder", f"data.source={root}", "data.val_size=1"]


def mknod_zero(path):
    try:
        os.mknod(path, 0o20600, os.makedev(1, 5))  # a character device reading as /dev/zero does
    except PermissionError:
        pytest.skip("making a device node needs root")


# peak RSS of each before the budgets were enforced while streaming: 2.2 GB (float copies of every image at once),
# 2.2 GB, 2.4 GB, over a 6 GB cap (then a MemoryError), hung until killed; now 290, 175, 41, 41 and 41 MB
BOMBS = {
    "16 black 2000 x 2000 PNGs, 1 KB": (
        lambda d: ["data.name=imagefolder", f"data.source={black_pngs(d / 'a.tar.gz', n=16)}", "data.val_size=2"],
        None,
    ),
    "a 1 GiB member of zeros named a.png": (
        lambda d: ["data.name=imagefolder", f"data.source={zeros_member(d / 'b.tar.gz')}", "data.val_size=1"],
        "train/a/a.png is over 135266304 bytes, more than data.max_image_pixels=16777216 allows",
    ),
    "a CIFAR batch calling numpy.ndarray with zero strides": (
        lambda d: cifar_with_batch(d / "c.tar.gz", zero_stride_batch()),
        "data_batch_1 is not a CIFAR pickle (UnpicklingError: refusing a call of numpy.ndarray",
    ),
    "a device node named x.png": (
        lambda d: special_file(d, mknod_zero),
        "train/cat/x.png is not a regular file (a FIFO or device)",
    ),
    "a FIFO named x.png": (lambda d: special_file(d, os.mkfifo), "train/cat/x.png is not a regular file (a FIFO"),
}


@pytest.mark.integration  # a child process per bomb, each up to 1 GB
@pytest.mark.parametrize("bomb", BOMBS)
def test_bombs_stay_within_1_gb_and_are_refused_in_one_line(tmp_path, bomb):
    build, message = BOMBS[bomb]
    argv = bench_argv("prepare", "--out", tmp_path / "out", "--raw", tmp_path / "raw", *build(tmp_path))
    r = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, timeout=120)
    code, peak_kib = map(int, r.stdout.split())
    assert peak_kib < 1 << 20, f"peak {peak_kib >> 10} MiB"  # 1 GiB
    if message is None:  # within the budgets: prepared, its statistics without a float copy of the images
        assert code == 0, r.stderr
        assert json.loads((tmp_path / "out/meta.json").read_text())["mean"] == [0.0] * 3
    else:
        assert code == 2, r.stderr
        assert message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "out").exists()


def test_channel_statistics_counted_a_chunk_at_a_time_are_exact():
    x = np.random.default_rng(0).integers(0, 256, (50, 3, 9, 7), dtype=np.uint8)
    idx = np.arange(3, 50, 2)
    mean, std = prepare.channel_stats(x, idx, chunk=200)  # three images a chunk
    f = x[idx].astype(np.float64) / 255
    assert np.allclose(mean, f.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    assert np.allclose(std, f.std(axis=(0, 2, 3)), rtol=0, atol=1e-12)


def test_channel_statistics_are_the_exact_values_correctly_rounded_whatever_the_cpu():
    """Not within a tolerance: equal to the float nearest the exact rational mean, and the square root of the
    float nearest the exact variance, as no float sum (whose rounding follows the CPU's vector kernels) gives."""
    x = np.random.default_rng(1).integers(0, 256, (997, 2, 8, 8), dtype=np.uint8)
    idx = np.arange(0, 997, 3)
    mean, std = prepare.channel_stats(x, idx, chunk=300)
    for channel in range(2):
        values = [Fraction(int(v), 255) for v in x[idx, channel].ravel()]
        exact_mean = sum(values) / len(values)
        exact_variance = sum((v - exact_mean) ** 2 for v in values) / len(values)
        assert mean[channel] == float(exact_mean)
        assert std[channel] == math.sqrt(float(exact_variance))


def test_a_second_prepare_into_a_busy_out_is_refused_and_keeps_the_first_s_work(tmp_path):
    out = tmp_path / "prepared"
    live = tmp_path / f".prepared.{os.getpid()}.tmp"  # the first prepare's unfinished folder
    with files.locked(tmp_path / ".prepared.lock"):  # held by the first prepare, as prepare() holds it
        live.mkdir()
        with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"):
            prepare.prepare(data_cfg(), out)
        assert live.is_dir()
    assert not out.exists()


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_unchanged(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / files.LOCK).symlink_to(target)
    with pytest.raises(ValueError, match="cannot be opened as a lock file"), files.locked(cell):
        pass
    (cell / files.LOCK).unlink()
    os.link(target, cell / files.LOCK)  # a hard link: the same file under two names
    with pytest.raises(ValueError, match="is not a plain file"), files.locked(cell):
        pass
    assert target.read_text() == "keep me\n"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_of_dead_processes_are_removed_and_a_live_one_s_kept(tmp_path):
    dead, live = dead_pid(), os.getppid()
    names = [f".last.ckpt.{dead}.tmp", f".metrics.json.{dead}.tmp", f".prepared.{dead}.old", f".x.{live}.tmp"]
    for name in names:
        (tmp_path / name).write_text("partial")
    (tmp_path / f".report.{dead}.tmp").mkdir()
    (tmp_path / "last.ckpt").write_text("kept")
    assert files.remove_stale(tmp_path) == sorted([*names[:3], f".report.{dead}.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".x.{live}.tmp", "last.ckpt"]


@pytest.fixture
def server():
    """A local HTTP server: serve[path] = (status, body) answers GET path; requests records the headers seen."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = Handler.serve.get(self.path.split("?")[0], (404, b"not found"))
            Handler.requests.append(dict(self.headers))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    Handler.serve, Handler.requests = {}, []
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    # a short poll: shutdown() waits for the loop to look, 0.5 s by default
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    yield f"127.0.0.1:{httpd.server_port}", Handler
    httpd.shutdown()


def test_an_imagefolder_download_is_cached_only_once_it_reads_as_a_tar(tmp_path, server):
    host, handler = server
    root = write_imagefolder(tmp_path / "images", classes=("cat", "dog"), per_class=(3, 1))
    with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as tar:
        tar.add(root, arcname=".")
    raw = tmp_path / "raw"
    (raw / f".images.tar.gz.{dead_pid()}.tmp").parent.mkdir()
    (raw / f".images.tar.gz.{dead_pid()}.tmp").write_text("left by a killed download")
    cfg = data_cfg("data.name=imagefolder", f"data.source=http://{host}/images.tar.gz", "data.val_size=1")
    handler.serve["/images.tar.gz"] = (200, b"<html>a login page, not an archive</html>")
    for _ in range(2):  # the same clear error each time: nothing bad was kept
        with pytest.raises(ValueError, match="is not a tar archive.*not kept"):
            prepare.prepare(cfg, tmp_path / "out", raw)
        assert list(raw.iterdir()) == []  # and the killed download's temporary file is gone
    handler.serve["/images.tar.gz"] = (200, (tmp_path / "images.tar.gz").read_bytes())  # the server fixed
    assert prepare.prepare(cfg, tmp_path / "out", raw)["counts"]["test"] == 2
    assert [p.name for p in raw.iterdir()] == ["images.tar.gz"]


def test_an_imagefolder_download_is_kept_only_once_its_content_matches_data_md5(tmp_path, server):
    host, handler = server
    archives = {}
    for seed in (0, 1):  # the right images, then others
        root = write_imagefolder(tmp_path / f"images{seed}", classes=("cat", "dog"), per_class=(3, 1), seed=seed)
        with tarfile.open(tmp_path / f"{seed}.tar.gz", "w:gz") as tar:
            tar.add(root, arcname=".")
        archives[seed] = (tmp_path / f"{seed}.tar.gz").read_bytes()
    md5 = prepare.prepare(
        data_cfg("data.name=imagefolder", f"data.source={root.parent / 'images0'}", "data.val_size=1"),
        tmp_path / "local",
    )["md5"]
    cfg = data_cfg(
        "data.name=imagefolder", f"data.source=http://{host}/images.tar.gz", f"data.md5={md5}", "data.val_size=1"
    )
    handler.serve["/images.tar.gz"] = (200, archives[1])
    with pytest.raises(ValueError, match="checksum mismatch.*the download is not kept"):
        prepare.prepare(cfg, tmp_path / "out", tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []
    handler.serve["/images.tar.gz"] = (200, archives[0])  # the server fixed
    assert prepare.prepare(cfg, tmp_path / "out", tmp_path / "raw")["md5"] == md5


def test_a_previous_out_a_killed_prepare_set_aside_is_removed_even_if_a_file(tmp_path, digits_dir):
    out = tmp_path / "prepared"
    shutil.copytree(digits_dir, out)
    (tmp_path / ".prepared.424242.old").write_text("an --out that was a file, set aside before --out was checked")
    prepare.prepare(data_cfg(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".prepared.lock", "prepared"]


def test_credentials_in_a_source_url_are_sent_but_never_recorded(tmp_path, server):
    host, handler = server
    root = write_imagefolder(tmp_path / "images", classes=("cat", "dog"), per_class=(3, 1))
    with tarfile.open(tmp_path / "images.tar.gz", "w:gz") as tar:
        tar.add(root, arcname=".")
    handler.serve["/d/images.tar.gz"] = (200, (tmp_path / "images.tar.gz").read_bytes())
    url = f"http://alice:s3cret@{host}/d/images.tar.gz?sig=t0ken"
    cfg = data_cfg("data.name=imagefolder", f"data.source={url}", "data.val_size=1")
    meta = prepare.prepare(cfg, tmp_path / "out", tmp_path / "raw")
    assert handler.requests[0]["Authorization"] == "Basic YWxpY2U6czNjcmV0"  # alice:s3cret
    assert meta["source"] == f"http://***@{host}/d/images.tar.gz?sig=***"
    written = (tmp_path / "out/meta.json").read_text() + " ".join(p.name for p in (tmp_path / "raw").iterdir())
    assert "s3cret" not in written
    assert "t0ken" not in written
    assert len(load_prepared(tmp_path / "out", cfg).test.y) == 2  # the redacted source is no stale source
    assert files.redact("https://host/x.tar.gz") == "https://host/x.tar.gz"
    assert files.redact("/data/raw/x.tar.gz") == "/data/raw/x.tar.gz"

"""Data loading: real files in the shared data folder, both CIFAR formats built from real records,
the documented errors, augmentation against brute-force references, resumable batches."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from interlock import data as D

ROOT = D.find_data_root()
RECORD = 3073


def _need(rel: str) -> Path:
    if ROOT is None:
        pytest.skip("no data folder: set $INTERLOCK_DATA or put the shared data in ../shared/data")
    path = ROOT / rel
    if not path.exists():
        pytest.skip(f"{path} is absent from the data folder; these tests read the real files")
    return path


@pytest.fixture(scope="module")
def cifar10():
    _need("cifar-10-batches-bin/data_batch_1.bin")
    return D.load_images("cifar10", ROOT, val_size=0)


def _raw_records(name: str, count: int) -> np.ndarray:
    """The first ``count`` official records of a CIFAR-10 binary batch, as bytes (count, 3073)."""
    path = _need(f"cifar-10-batches-bin/{name}.bin")
    with open(path, "rb") as f:
        return np.frombuffer(f.read(count * RECORD), dtype=np.uint8).reshape(count, RECORD)


# ------------------------------------------------------------------ real files


def test_cifar10_real_files(cifar10):
    d = cifar10
    assert d.train_x.shape == (20000, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (10000, 3, 32, 32) and d.test_y.dtype == torch.int64
    assert d.val_x.shape == (0, 3, 32, 32) and d.val_y.shape == (0,)
    assert d.test_y.bincount(minlength=10).tolist() == [1000] * 10
    assert int(d.train_y.min()) == 0 and int(d.train_y.max()) == 9
    meta = (ROOT / "cifar-10-batches-bin/batches.meta.txt").read_text().split()
    assert list(d.class_names) == meta and d.num_classes == 10
    assert "data_batch_1" in d.source and "data_batch_2" in d.source
    # Image 0 of each batch against its bytes: label byte, then R, G, B planes row-major.
    for x, y, name, at in ((d.train_x, d.train_y, "data_batch_1", 0), (d.train_x, d.train_y, "data_batch_2", 10000), (d.test_x, d.test_y, "test_batch", 0)):
        rec = _raw_records(name, 1)[0]
        assert int(y[at]) == rec[0]
        assert torch.equal(x[at], torch.from_numpy(rec[1:].copy()).view(3, 32, 32))
        assert int(x[at, 1, 2, 3]) == rec[1 + 1024 + 2 * 32 + 3]  # green, row 2, column 3


def test_mnist_real_files():
    _need("mnist/train-images-idx3-ubyte.gz")
    d = D.load_images("mnist", ROOT)
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert int(d.train_y[0]) == 5
    assert sorted(d.train_y.unique().tolist()) == list(range(10)) == sorted(d.test_y.unique().tolist())
    with gzip.open(ROOT / "mnist/t10k-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    assert struct.unpack(">4i", raw[:16]) == (2051, 10000, 28, 28)
    assert torch.equal(d.test_x[-1, 0].flatten(), torch.frombuffer(bytearray(raw[-784:]), dtype=torch.uint8))


def test_tiny_shakespeare_real_file():
    path = _need("text/tinyshakespeare/input.txt")
    text = path.read_text(encoding="utf-8")
    corpus = D.load_char_corpus("tinyshakespeare", ROOT)
    assert len(text) == 1115394 and len(set(text)) == 65
    assert len(corpus.vocab.chars) == 65 and corpus.vocab.size == 66 and corpus.vocab.unk_id == 65
    assert len(corpus.train) == int(0.9 * len(text)) and len(corpus.train) + len(corpus.val) == len(text)
    assert corpus.train.dtype == torch.int64 and int(corpus.train.max()) < 65  # <unk> never in training
    assert corpus.vocab.decode(corpus.train) + corpus.vocab.decode(corpus.val) == text
    assert corpus.vocab.encode("a")[0] == sorted(set(text)).index("a")


def test_wikitext_is_encoded_with_the_training_vocabulary():
    _need("text/wikitext-2-raw/wiki.valid.raw")
    vocab = D.CharVocab.from_text("".join(sorted(set("the quick brown fox = @\n"))))
    ev = D.load_eval_text("wikitext2", vocab, ROOT)
    text = (ROOT / "text/wikitext-2-raw/wiki.valid.raw").read_text(encoding="utf-8")
    known = set(vocab.chars)
    assert len(ev.val) == len(text)
    assert ev.unknown_val == sum(c not in known for c in text)  # brute force
    assert vocab.decode(ev.val) == "".join(c if c in known else D.text.UNK_CHAR for c in text)
    assert ev.unknown_test > 0 and len(ev.test) > 1_000_000


# ------------------------------------------------------------------ CIFAR-10 python version


def _write_pickle(path: Path, obj, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _write_cifar10_both(tmp_path: Path, batches: dict[str, np.ndarray], protocol: int = 2) -> None:
    """Both official layouts of the same records: .bin files and python pickles."""
    binary, python = tmp_path / "cifar-10-batches-bin", tmp_path / "py" / "cifar-10-batches-py"
    binary.mkdir()
    python.mkdir(parents=True)
    for name, rec in batches.items():
        (binary / f"{name}.bin").write_bytes(rec.tobytes())
        _write_pickle(python / name, {b"batch_label": name.encode(), b"labels": [int(v) for v in rec[:, 0]],
                                      b"data": rec[:, 1:].copy(), b"filenames": [b"x.png"] * len(rec)}, protocol)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (binary / "batches.meta.txt").write_text("\n".join(names) + "\n")
    _write_pickle(python / "batches.meta", {b"label_names": [n.encode() for n in names], b"num_vis": 3072})


@pytest.fixture
def small_official_files(monkeypatch):
    """Let official file names hold the few records these format tests write (loading checks the official counts)."""
    from interlock.data import cifar

    small = {"cifar10": {"data_batch_1": 40, "data_batch_3": 30, "test_batch": 20}, "cifar100": {"train": 20, "test": 10}}
    monkeypatch.setattr(cifar, "OFFICIAL_COUNTS", small)


@pytest.mark.parametrize("protocol", [2, 5])  # 2: as the official files; 5: re-pickled by Python 3
def test_cifar10_pickle_and_binary_give_identical_tensors(tmp_path, caplog, protocol, small_official_files):
    batches = {"data_batch_1": _raw_records("data_batch_1", 40), "data_batch_3": _raw_records("data_batch_2", 30),
               "test_batch": _raw_records("test_batch", 20)}
    _write_cifar10_both(tmp_path, batches, protocol)
    assert D.detect_cifar(tmp_path).format == "binary"
    assert D.detect_cifar(tmp_path / "py").format == "python"
    with caplog.at_level("INFO", logger="interlock.data.cifar"):
        b = D.load_cifar(tmp_path, "cifar10")
    assert "data_batch_1, data_batch_3 (2 of 5" in caplog.text
    p = D.load_cifar(tmp_path / "py", "cifar10")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(b, field), getattr(p, field)), field
    assert b.class_names == p.class_names and b.class_names[9] == "truck"
    expected = np.concatenate([batches["data_batch_1"], batches["data_batch_3"]])
    assert b.train_y.tolist() == expected[:, 0].tolist()
    assert torch.equal(b.train_x, torch.from_numpy(expected[:, 1:].copy()).view(-1, 3, 32, 32))
    assert len(D.load_images("cifar10", tmp_path / "py", val_size=10).val_x) == 10


# ------------------------------------------------------------------ CIFAR-100, both formats


def test_cifar100_binary_and_python(tmp_path, small_official_files):
    pixels = _raw_records("data_batch_1", 30)[:, 1:]
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 20), ("test", 10)):
        fine = rng.integers(0, 100, n, dtype=np.uint8)
        coarse = rng.integers(0, 20, n, dtype=np.uint8)
        px = pixels[:n] if split == "train" else pixels[20:]
        splits[split] = (px, fine, coarse)
    fine_names = [f"fine{i}" for i in range(100)]
    coarse_names = [f"coarse{i}" for i in range(20)]
    binary, python = tmp_path / "a" / "cifar-100-binary", tmp_path / "b" / "cifar-100-python"
    binary.mkdir(parents=True)
    python.mkdir(parents=True)
    for split, (px, fine, coarse) in splits.items():
        records = np.concatenate([coarse[:, None], fine[:, None], px], axis=1)  # coarse byte, fine byte, pixels
        (binary / f"{split}.bin").write_bytes(records.tobytes())
        _write_pickle(python / split, {b"filenames": [b"f"] * len(px), b"batch_label": b"x", b"fine_labels": fine.tolist(),
                                       b"coarse_labels": coarse.tolist(), b"data": px.copy()})
    (binary / "fine_label_names.txt").write_text("\n".join(fine_names))
    (binary / "coarse_label_names.txt").write_text("\n".join(coarse_names))
    _write_pickle(python / "meta", {b"fine_label_names": [n.encode() for n in fine_names],
                                    b"coarse_label_names": [n.encode() for n in coarse_names]})

    for label, col, names in (("fine", 1, fine_names), ("coarse", 2, coarse_names)):
        b = D.load_cifar(tmp_path / "a", "cifar100", label=label)
        p = D.load_cifar(tmp_path / "b", "cifar100", label=label)
        for field in ("train_x", "train_y", "test_x", "test_y"):
            assert torch.equal(getattr(b, field), getattr(p, field)), (label, field)
        assert b.train_y.tolist() == splits["train"][col].tolist() and b.test_y.tolist() == splits["test"][col].tolist()
        assert list(b.class_names) == names == list(p.class_names)
    assert torch.equal(b.test_x, torch.from_numpy(pixels[20:].copy()).view(-1, 3, 32, 32))
    d = D.load_images("cifar100", tmp_path / "a")
    assert d.num_classes == 100 and d.train_x.shape == (20, 3, 32, 32)


# ------------------------------------------------------------------ documented errors


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-bin/.*University of Toronto.*\$INTERLOCK_DATA"):
        D.load_images("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-bin").mkdir()
    (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").write_bytes(bytes(RECORD))
    with pytest.raises(FileNotFoundError, match=r"test_batch\.bin: missing the CIFAR-10 test batch"):
        D.load_cifar(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.find_data_root(tmp_path / "nowhere")


@pytest.mark.parametrize("fmt", ["binary", "python"])
def test_an_official_file_cut_at_a_record_boundary_is_refused_naming_it(tmp_path, fmt):
    # 7,500 whole records read as a valid file: only the official count (10,000) shows the loss.
    records = _raw_records("data_batch_1", 7500)
    folder = tmp_path / ("cifar-10-batches-bin" if fmt == "binary" else "cifar-10-batches-py")
    folder.mkdir()
    name = "data_batch_1.bin" if fmt == "binary" else "data_batch_1"
    if fmt == "binary":
        (folder / name).write_bytes(records.tobytes())
    else:
        _write_pickle(folder / name, {b"labels": [int(v) for v in records[:, 0]], b"data": records[:, 1:].copy()})
    (folder / ("test_batch.bin" if fmt == "binary" else "test_batch")).write_bytes(b"")  # not reached
    with pytest.raises(ValueError, match=rf"{name}: holds 7500 images, but the official file holds 10000; it is truncated"):
        D.load_images("cifar10", tmp_path)


def test_data_root_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERLOCK_DATA", str(tmp_path))
    assert D.find_data_root() == tmp_path
    assert D.detect_cifar(D.find_data_root()) is None
    monkeypatch.setenv("INTERLOCK_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"\$INTERLOCK_DATA=.*nowhere is not a folder"):
        D.load_images("mnist")


def test_wrong_or_truncated_cifar_files(tmp_path):
    rec = _raw_records("data_batch_1", 3)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(rec.tobytes()[:-5])
    with pytest.raises(ValueError, match=r"truncated\.bin: 9214 bytes is not a whole number of 3073-byte records"):
        D.read_cifar10_binary(truncated)
    bad_label = rec.copy()
    bad_label[1, 0] = 10
    (tmp_path / "label.bin").write_bytes(bad_label.tobytes())
    with pytest.raises(ValueError, match=r"label\.bin: label 10 is out of range 0\.\.9"):
        D.read_cifar10_binary(tmp_path / "label.bin")
    c100 = np.concatenate([np.array([[3, 100]], dtype=np.uint8), rec[:1, 1:]], axis=1)
    (tmp_path / "c100.bin").write_bytes(c100.tobytes())
    with pytest.raises(ValueError, match=r"c100\.bin: fine label 100 is out of range 0\.\.99"):
        D.read_cifar100_binary(tmp_path / "c100.bin")
    with pytest.raises(ValueError, match="not a whole number of 3074-byte records"):
        D.read_cifar100_binary(tmp_path / "label.bin")  # CIFAR-10 records are one byte shorter

    _write_pickle(tmp_path / "nokeys", {b"data": rec[:, 1:].copy(), b"fine_labels": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"nokeys: a CIFAR-10 python batch is a dict with keys b'data', b'labels'"):
        D.read_cifar10_pickle(tmp_path / "nokeys")
    _write_pickle(tmp_path / "badlabel", {b"data": rec[:, 1:].copy(), b"labels": [0, 11, 2]})
    with pytest.raises(ValueError, match=r"badlabel: label 11 is out of range"):
        D.read_cifar10_pickle(tmp_path / "badlabel")
    _write_pickle(tmp_path / "shape", {b"data": rec.copy(), b"labels": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"b'data' must be an \(N, 3072\) uint8 array; got shape \(3, 3073\)"):
        D.read_cifar10_pickle(tmp_path / "shape")
    whole = pickle.dumps({b"data": rec[:, 1:].copy(), b"labels": [0, 1, 2]}, protocol=2)
    (tmp_path / "cut").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="cut: not a readable CIFAR-10 python batch"):
        D.read_cifar10_pickle(tmp_path / "cut")
    with pytest.raises(ValueError, match="not a readable"):
        D.read_cifar10_pickle(tmp_path / "label.bin")  # the binary version is not a pickle


class _Evil:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_pickles_cannot_run_code(tmp_path):
    _write_pickle(tmp_path / "evil", {b"data": _Evil(), b"labels": []})
    with pytest.raises(ValueError, match=r"refusing to load global (posix|nt|os)\.getcwd"):
        D.read_cifar10_pickle(tmp_path / "evil")


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">i", magic) + struct.pack(f">{len(dims)}i", *dims) + payload


def test_idx_reader_and_its_errors(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    (tmp_path / "img").write_bytes(_idx(2051, (2, 28, 28), images.tobytes()))
    with gzip.open(tmp_path / "img.gz", "wb") as f:
        f.write(_idx(2051, (2, 28, 28), images.tobytes()))
    for name in ("img", "img.gz"):
        x = D.read_mnist_images(tmp_path / name)
        assert x.shape == (2, 1, 28, 28) and torch.equal(x[:, 0], torch.from_numpy(images))
    ints = np.array([[1, -2, 300]], dtype=">i4")
    (tmp_path / "ints").write_bytes(_idx(0x0C02, (1, 3), ints.tobytes()))
    assert D.read_idx(tmp_path / "ints").tolist() == [[1, -2, 300]]

    (tmp_path / "magic").write_bytes(_idx(0x12345678, (2,), b"\0\0"))
    with pytest.raises(ValueError, match=r"magic: bad IDX magic 0x12345678"):
        D.read_idx(tmp_path / "magic")
    (tmp_path / "labels").write_bytes(_idx(2049, (2,), b"\x01\x02"))
    with pytest.raises(ValueError, match=r"labels: IDX magic 0x00000801, expected 0x00000803"):
        D.read_mnist_images(tmp_path / "labels")
    (tmp_path / "short").write_bytes(_idx(2051, (2, 28, 28), images.tobytes()[:-1]))
    with pytest.raises(ValueError, match=r"short: 1583 bytes, but the header announces shape \(2, 28, 28\)"):
        D.read_mnist_images(tmp_path / "short")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"x" * 100)[:20])
    with pytest.raises(ValueError, match=r"bad\.gz: not a readable gzip file"):
        D.read_idx(tmp_path / "bad.gz")
    (tmp_path / "label10").write_bytes(_idx(2049, (2,), b"\x01\x0a"))
    with pytest.raises(ValueError, match="label 10 is out of range 0..9"):
        D.read_mnist_labels(tmp_path / "label10")
    (tmp_path / "mnist").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz \(or uncompressed train-images-idx3-ubyte\)"):
        D.load_mnist(tmp_path)


# ------------------------------------------------------------------ augmentation


def _reference_crop(x: torch.Tensor, top: list[int], left: list[int], p: int) -> torch.Tensor:
    out = []
    for i in range(len(x)):
        padded = F.pad(x[i], (p, p, p, p))
        out.append(padded[:, top[i] : top[i] + x.shape[2], left[i] : left[i] + x.shape[3]])
    return torch.stack(out)


def test_pad_crop_matches_a_per_image_reference_and_zero_fills():
    x = torch.rand(5, 3, 8, 6) + 1.0  # strictly positive: zeros in the output are padding
    top, left = [0, 4, 8, 2, 7], [8, 4, 0, 5, 1]
    out = D.pad_crop(x, torch.tensor(top), torch.tensor(left), padding=4)
    assert out.shape == x.shape
    assert torch.equal(out, _reference_crop(x, top, left, 4))
    assert torch.equal(out[1], x[1])  # offset (p, p): identity
    # top=0, left=8: shifted down 4 rows and left 4 columns.
    assert (out[0, :, :4] == 0).all() and (out[0, :, :, -4:] == 0).all()
    assert torch.equal(out[0, :, 4:, :-4], x[0, :, :-4, 4:])
    assert (out[0, :, 4:, :-4] > 0).all()
    # top=8, left=0: shifted up 4 and right 4.
    assert (out[2, :, -4:] == 0).all() and (out[2, :, :, :4] == 0).all()
    assert torch.equal(out[2, :, :-4, 4:], x[2, :, 4:, :-4])


def test_random_crop_and_flip():
    x = torch.rand(64, 3, 8, 8) + 1.0
    a = D.random_crop(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape
    assert torch.equal(a, D.random_crop(x, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(a, D.random_crop(x, generator=torch.Generator().manual_seed(2)))
    # Every crop is one of the 81 shifted windows (brute force), and several shifts occur.
    shifts = set()
    for i in range(len(x)):
        found = [(t, l) for t in range(9) for l in range(9) if torch.equal(a[i], _reference_crop(x[i : i + 1], [t], [l], 4)[0])]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 20

    assert torch.equal(D.random_flip(x, generator=torch.Generator(), p=1.0), x.flip(-1))
    assert torch.equal(D.random_flip(x, generator=torch.Generator(), p=0.0), x)
    f = D.random_flip(x, generator=torch.Generator().manual_seed(3))
    mirrored = [bool(torch.equal(f[i], x[i, :, :, torch.arange(7, -1, -1)])) for i in range(len(x))]
    kept = [bool(torch.equal(f[i], x[i])) for i in range(len(x))]
    assert all(m != k for m, k in zip(mirrored, kept)) and 10 < sum(mirrored) < 54


def test_channel_stats_brute_force_and_train_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (37, 3, 5, 7), generator=g, dtype=torch.uint8)
    x[:, 1] //= 3
    mean, std = D.channel_stats(x, chunk=10)
    ref = x.double().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(mean.double(), ref.mean(1), atol=1e-7)
    assert torch.allclose(std.double(), ref.std(1, unbiased=False), atol=1e-7)
    y = torch.randn(2, 3, 4, 4)
    assert torch.allclose(D.normalize(y, mean, std)[:, 2], (y[:, 2] - mean[2]) / std[2])


def test_validation_split_and_stats_from_train_only(cifar10):
    d = D.load_images("cifar10", ROOT, val_size=4000, seed=7)
    assert len(d.train_x) == 16000 and len(d.val_x) == 4000 and len(d.test_x) == 10000
    train_idx, val_idx = D.split_validation(20000, 4000, seed=7)
    assert torch.equal(d.val_x, cifar10.train_x[val_idx]) and torch.equal(d.train_y, cifar10.train_y[train_idx])
    assert sorted(torch.cat([train_idx, val_idx]).tolist()) == list(range(20000))
    mean, std = D.channel_stats(cifar10.train_x[train_idx])
    assert torch.equal(d.mean, mean) and torch.equal(d.std, std)
    assert not torch.equal(d.mean, cifar10.mean)  # the held-out images do not count
    assert torch.equal(D.split_validation(20000, 4000, seed=7)[1], val_idx)
    assert not torch.equal(D.split_validation(20000, 4000, seed=8)[1], val_idx)
    with pytest.raises(ValueError, match=r"val_size=20000 must be an integer in 0\.\.19999"):
        D.split_validation(20000, 20000, seed=0)
    small = d.limit_train(500)
    assert torch.equal(small.train_x, d.train_x[:500]) and torch.equal(small.val_y, d.val_y)
    assert torch.equal(small.mean, D.channel_stats(d.train_x[:500])[0])


# ------------------------------------------------------------------ resumable batches


def test_derived_seeds_separate_purposes_and_counters():
    seeds = [D.derive_seed(1, "augment", 2), D.derive_seed(1, "augment", 2, 0), D.derive_seed(1, "shuffle", 2),
             D.derive_seed(1, "augment", 0, 2), D.derive_seed(2, "augment", 2), D.derive_seed(1, "augment", 3)]
    assert len(set(seeds)) == len(seeds)  # [a, b] and [a, b, 0] must not collide
    assert D.derive_seed(1, "augment", 2) == D.derive_seed(1, "augment", 2)
    with pytest.raises(ValueError, match="integers >= 0"):
        D.derive_seed(-1, "augment")



def test_iterate_batches_resume_equals_uninterrupted(cifar10):
    x, y = cifar10.train_x[:100], cifar10.train_y[:100]
    kw = dict(shuffle=True, seed=3, augment=True, mean=cifar10.mean, std=cifar10.std)
    full = list(D.iterate_batches(x, y, 16, epoch=2, **kw))
    assert len(full) == 7 and full[-1][0].shape == (4, 3, 32, 32)
    assert full[0][0].dtype == torch.float32 and full[0][1].dtype == torch.int64
    resumed = list(D.iterate_batches(x, y, 16, epoch=2, start_step=4, **kw))
    assert len(resumed) == 3
    for (xa, ya), (xb, yb) in zip(full[4:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = list(D.iterate_batches(x, y, 16, epoch=3, **kw))
    assert not torch.equal(torch.cat([b[1] for b in other]), torch.cat([b[1] for b in full]))
    # Each step draws its own augmentation: the same 16 images twice in one epoch come out differently.
    twice = list(D.iterate_batches(torch.cat([x[:16], x[:16]]), torch.cat([y[:16], y[:16]]), 16, seed=3, augment=True))
    assert not torch.equal(twice[0][0], twice[1][0]) and torch.equal(twice[0][1], twice[1][1])

    # Without augmentation each epoch is a permutation: every image once, normalised exactly.
    plain = list(D.iterate_batches(x, y, 16, shuffle=True, seed=3, epoch=2, drop_last=True, mean=cifar10.mean, std=cifar10.std))
    assert len(plain) == 6
    xs = torch.cat([b[0] for b in plain]) * cifar10.std[:, None, None] + cifar10.mean[:, None, None]
    pixels = (xs * 255).round().to(torch.uint8)
    rows = {bytes(x[i].flatten().tolist()): int(y[i]) for i in range(len(x))}
    labels = torch.cat([b[1] for b in plain]).tolist()
    assert all(rows[bytes(p.flatten().tolist())] == lab for p, lab in zip(pixels, labels))
    assert len({bytes(p.flatten().tolist()) for p in pixels}) == 96

    with pytest.raises(ValueError, match=r"start_step=8 must be in 0\.\.7"):
        D.iterate_batches(x, y, 16, start_step=8)
    with pytest.raises(ValueError, match="give both mean and std"):
        D.iterate_batches(x, y, 16, mean=cifar10.mean)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_equal_cpu(cifar10):
    x, y = cifar10.train_x[:64], cifar10.train_y[:64]
    kw = dict(shuffle=True, seed=1, epoch=0, augment=True, mean=cifar10.mean, std=cifar10.std)
    for (xa, ya), (xb, yb) in zip(D.iterate_batches(x, y, 32, **kw), D.iterate_batches(x, y, 32, device="cuda", **kw)):
        assert xb.device.type == "cuda" and torch.equal(ya, yb.cpu())
        assert torch.allclose(xa, xb.cpu(), atol=1e-6)


# ------------------------------------------------------------------ text


def test_char_vocab_and_unk():
    v = D.CharVocab.from_text("hello world")
    assert v.chars == (" ", "d", "e", "h", "l", "o", "r", "w") and v.size == 9 and v.unk_id == 8
    ids = v.encode("hold ex")
    assert ids.tolist() == [3, 5, 4, 1, 0, 2, 8]
    assert v.decode(ids) == "hold e\ufffd"
    with pytest.raises(ValueError, match="outside the vocabulary.*with_unk=True"):
        D.CharVocab.from_text("ab", with_unk=False).encode("abc")


def test_random_text_batches_are_shifted_windows_and_resume():
    tokens = torch.arange(500)  # distinct values: each window shows where it starts
    x, y = D.random_text_batch(tokens, batch_size=8, block_size=16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(x, x[:, :1] + torch.arange(16)) and torch.equal(y, x + 1)
    assert int(y.max()) <= 499 and len(set(x[:, 0].tolist())) > 1
    full = list(D.iterate_text_batches(tokens, batch_size=4, block_size=8, seed=5, num_steps=6))
    resumed = list(D.iterate_text_batches(tokens, batch_size=4, block_size=8, seed=5, start_step=4, num_steps=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[4:], resumed))
    assert not torch.equal(full[0][0], full[1][0])


@pytest.mark.parametrize("L,T,B", [(101, 10, 3), (97, 10, 4), (11, 10, 2), (50, 7, 100), (23, 5, 1)])
def test_sequential_text_batches_score_every_target_once(L, T, B):
    tokens = torch.arange(L) * 3
    batches = list(D.sequential_text_batches(tokens, batch_size=B, block_size=T))
    assert all(len(b[0]) <= B for b in batches)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    scored = y[y != D.IGNORE_INDEX]
    assert torch.equal(scored, tokens[1:])  # every target once, in order
    assert torch.equal(y[y != D.IGNORE_INDEX], (x + 3)[y != D.IGNORE_INDEX])


# ------------------------------------------------------------------ digits fallback


def test_digits_fallback():
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn, which is not installed")
    d = D.load_images("digits", val_size=137, seed=1)
    assert d.train_x.shape == (1300, 1, 8, 8) and d.val_x.shape == (137, 1, 8, 8) and d.test_x.shape == (360, 1, 8, 8)
    assert int(torch.cat([d.train_x, d.test_x]).max()) == 255 and d.num_classes == 10
    assert sorted(d.test_y.unique().tolist()) == list(range(10))
    from sklearn.datasets import load_digits

    ref = load_digits()
    scaled = torch.as_tensor(np.rint(ref.images * 255 / 16).astype(np.uint8))
    # The three splits partition sklearn's images (compared as rows with their labels).
    rows = sorted((bytes(i.flatten().tolist()), int(t)) for i, t in zip(scaled, ref.target))
    ours = sorted((bytes(i.flatten().tolist()), int(t)) for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)) for i, t in zip(x, y))
    assert ours == rows
    again = D.load_images("digits", val_size=0, seed=5)
    assert torch.equal(again.test_x, d.test_x)  # the test split does not depend on the run's seed

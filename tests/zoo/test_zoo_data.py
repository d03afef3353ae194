"""Data: checksums refused, missing files explained, downloads checked, the loaders' formats."""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np
import pytest

from concrete_ext.zoo import data
from concrete_ext.zoo.data import ChecksumError, DataNotFoundError, Remote


def _remote(
    tmp_path, content: bytes, digest=None, name="file.bin", urls=("http://example.invalid/f",)
):
    return Remote(name, "sub", tuple(urls), digest or hashlib.sha256(content).hexdigest())


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """An empty data folder and an empty cache."""
    monkeypatch.setenv("CONCRETE_EXT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CONCRETE_EXT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_found_file_is_checked_plain_and_gzipped(roots):
    content = b"0 1 0\n" * 10
    r = _remote(roots, content)
    folder = roots / "data" / "sub"
    folder.mkdir(parents=True)
    (folder / "file.bin.gz").write_bytes(gzip.compress(content))
    assert data.fetch(r, download=False) == str(folder / "file.bin.gz")
    (folder / "file.bin").write_bytes(content)
    assert data.fetch(r, download=False) == str(folder / "file.bin")
    assert data.read_content(str(folder / "file.bin.gz")) == content


def test_checksum_mismatch_is_refused(roots):
    r = _remote(roots, b"the real content")
    folder = roots / "data" / "sub"
    folder.mkdir(parents=True)
    (folder / "file.bin").write_bytes(b"a corrupted copy")
    with pytest.raises(ChecksumError) as e:
        data.fetch(r, download=False)
    msg = str(e.value)
    assert r.digest in msg and "file.bin" in msg and "Delete it" in msg


def test_missing_file_says_where_to_put_it(roots):
    r = _remote(roots, b"x", urls=("http://example.invalid/file.bin",))
    with pytest.raises(DataNotFoundError) as e:
        data.fetch(r, download=False)
    msg = str(e.value)
    assert str(roots / "data" / "sub") in msg and "http://example.invalid/file.bin" in msg
    assert "CONCRETE_EXT_DATA" in msg


def test_download_is_checked_then_moved_into_the_cache(roots, monkeypatch):
    monkeypatch.delenv("CONCRETE_EXT_OFFLINE", raising=False)
    src = roots / "server" / "file.bin"
    src.parent.mkdir()
    src.write_bytes(b"payload")
    good = _remote(roots, b"payload", urls=(src.as_uri(),))
    path = data.fetch(good)
    assert path == str(roots / "cache" / "sub" / "file.bin")
    assert open(path, "rb").read() == b"payload"
    os.unlink(path)
    bad = _remote(roots, b"payload", digest="0" * 64, urls=(src.as_uri(),))
    with pytest.raises(DataNotFoundError, match="downloaded, but"):
        data.fetch(bad)
    assert os.listdir(roots / "cache" / "sub") == []  # nothing half-written or wrong is left
    unreachable = _remote(roots, b"x", urls=((roots / "nowhere").as_uri(),))
    with pytest.raises(DataNotFoundError, match="the download failed"):
        data.fetch(unreachable)


def test_registry_has_canonical_addresses_and_digests():
    f = data.FILES
    assert f["binarized_mnist_train"].urls[0] == (
        "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
        "binarized_mnist_train.amat"
    )
    assert f["omniglot"].urls[0].endswith("yburda/iwae/master/datasets/OMNIGLOT/chardata.mat")
    assert (
        f["mnist_train_images"].urls[0]
        == "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz"
    )
    for r in f.values():
        assert len(r.digest) == {"sha256": 64, "md5": 32}[r.algorithm]


def test_parse_amat_and_idx():
    rows = np.random.RandomState(0).randint(0, 2, size=(3, 784)).astype(np.uint8)
    text = "".join(" ".join(map(str, r)) + "\n" for r in rows).encode()
    np.testing.assert_array_equal(data.parse_amat(text), rows)
    loose = "".join("  ".join(map(str, r)) + " \n" for r in rows).encode()  # other whitespace
    np.testing.assert_array_equal(data.parse_amat(loose), rows)
    idx = (
        bytes([0, 0, 8, 3])
        + (2).to_bytes(4, "big")
        + (2).to_bytes(4, "big")
        + (3).to_bytes(4, "big")
        + bytes(range(12))
    )
    np.testing.assert_array_equal(data.parse_idx(idx), np.arange(12).reshape(2, 2, 3))
    with pytest.raises(ValueError, match="truncated"):
        data.parse_idx(idx[:-1])


def test_omniglot_loader_on_a_synthetic_file(tmp_path, monkeypatch):
    """The real chardata.mat is not available here: a file of its layout (784 x N grey levels under
    'data' and 'testdata', as in IWAE) is read, binarized with the fixed seed, and the real file's
    md5 refuses it."""
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.RandomState(1)
    mat = {"data": rng.rand(784, 40), "testdata": rng.rand(784, 12)}
    folder = tmp_path / "omniglot"
    folder.mkdir()
    path = str(folder / "chardata.mat")
    scipy_io.savemat(path, mat)
    ds = data.load_omniglot(path=path)
    # no validation split in the file: a tenth (at most 1,345) of the training images held out
    assert ds.train.shape == (36, 784) and ds.valid.shape == (4, 784)
    assert ds.test.shape == (12, 784)
    assert ds.train.dtype == np.uint8 and set(np.unique(ds.train)) <= {0, 1}
    both = np.concatenate([ds.train, ds.valid])
    assert abs(both.mean() - mat["data"].mean()) < 0.02  # Bernoulli draws of the grey levels
    again = data.load_omniglot(path=path)  # fixed seeds: the same split and binarization
    np.testing.assert_array_equal(ds.train, again.train)
    np.testing.assert_array_equal(ds.valid, again.valid)
    # the held-out images are training images, disjoint from those trained on
    rows = {
        r.tobytes(): i
        for i, r in enumerate(
            data._binarize_fixed(mat["data"].T.astype(np.float64), data.OMNIGLOT_BINARIZATION_SEED)
        )
    }
    held = {rows[r.tobytes()] for r in ds.valid}
    kept = {rows[r.tobytes()] for r in ds.train}
    assert len(held) == 4 and len(kept) == 36 and not held & kept
    monkeypatch.setenv("CONCRETE_EXT_DATA", str(tmp_path))
    with pytest.raises(ChecksumError, match="21ecaf34373511aa7691cf2e0802aa3d"):
        data.load_omniglot(download=False)
    scipy_io.savemat(path, {"data": rng.rand(10, 3), "testdata": rng.rand(784, 2)})
    with pytest.raises(ValueError, match="784 x N"):
        data.load_omniglot(path=path)


def test_shipped_sample():
    ds = data.load_mnist_sample()
    assert ds.train.shape == (3000, 784) and ds.valid.shape == (500, 784)
    assert ds.test.shape == (1000, 784) and ds.train.dtype == np.uint8
    assert os.path.getsize(data.SAMPLE_PATH) < 1_000_000


def _have(keys):
    try:
        for k in keys:
            data.fetch(k, download=False)
    except (DataNotFoundError, ChecksumError):
        return False
    return True


@pytest.mark.skipif(
    not _have(["binarized_mnist_train", "binarized_mnist_valid", "binarized_mnist_test"]),
    reason="binarized MNIST not in CONCRETE_EXT_DATA",
)
def test_binarized_mnist_and_the_sample_agree():
    ds = data.load_binarized_mnist(download=False)
    assert ds.train.shape == (50000, 784) and ds.valid.shape == (10000, 784)
    assert abs(ds.train.mean() - 0.13056) < 1e-5 and abs(ds.test.mean() - 0.13251) < 1e-5
    sample = data.load_mnist_sample()
    for split in ("train", "valid", "test"):
        full = ds.split(split)
        np.testing.assert_array_equal(
            sample.split(split), full[data.sample_indices(split, len(full))]
        )
    # the sample is representative (the first test images are not: 20% more ink)
    assert abs(sample.test.mean() - ds.test.mean()) < 0.005
    assert ds.test[:500].mean() > ds.test.mean() + 0.02


@pytest.mark.skipif(
    not _have(["mnist_train_images", "mnist_test_images"]),
    reason="MNIST IDX files not in CONCRETE_EXT_DATA",
)
def test_dynamic_mnist():
    ds = data.load_mnist_dynamic(download=False)
    assert ds.dynamic and ds.train.shape == (50000, 784) and ds.train.dtype == np.float32
    assert ds.valid.dtype == np.uint8 and ds.test.shape == (10000, 784)
    assert abs(ds.test.mean() - 0.1325) < 0.005

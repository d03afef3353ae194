"""Datasets of Section 5 (Maddison, Mnih & Teh, ICLR 2017): where they come from, checksums, loading.

* ``mnist`` (the paper's): MNIST with the fixed binarization of Salakhutdinov & Murray (2008), Hugo
  Larochelle's ``binarized_mnist_{train,valid,test}.amat``, 50,000 / 10,000 / 10,000 images.
* ``mnist-dynamic``: the original MNIST IDX files (LeCun et al.); the first 50,000 training images
  for training, the last 10,000 for validation, t10k for test. Training batches are binarized afresh
  (a Bernoulli draw per pixel from its grey level) each time they are drawn; validation and test are
  binarized once with the fixed seed ``DYNAMIC_EVAL_SEED``.
* ``omniglot``: the 28x28 Omniglot of Burda et al. (IWAE), ``chardata.mat`` (keys ``data`` and
  ``testdata``, 784 x N grey levels), 24,345 / 8,070 images, binarized once with the fixed seed
  ``OMNIGLOT_BINARIZATION_SEED`` (the paper used "a fixed binarization" without stating its seed).
  It has no validation split: ``OMNIGLOT_VALID`` (1,345) random training images (seed
  ``OMNIGLOT_VALID_SEED``) are held out as one, so models are selected on images they were not
  trained on; 23,000 remain for training.
* ``mnist-sample``: a small random sample of ``mnist`` shipped inside the package
  (``data/mnist_sample.npz``: 3,000 / 500 / 1,000 images) so the demo and the tests run offline.

Each file is looked for, in order, in the folder given by ``root=``, in ``$CONCRETE_EXT_DATA``, and
in the cache (``$CONCRETE_EXT_CACHE``, default ``~/.cache/concrete_ext/data``), under its sub-folder
(e.g. ``binarized_mnist/``) or directly, plain or gzipped (``.gz``). A file that is found is checked
against the digest of its (decompressed) content and refused when it does not match. A file that is
found nowhere is downloaded from its canonical address into the cache (written to a temporary file,
checked, then moved into place); when that fails, the error says where to put the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "ChecksumError",
    "DataNotFoundError",
    "Dataset",
    "Remote",
    "FILES",
    "DATASETS",
    "verify",
    "parse_amat",
    "parse_idx",
    "describe_files",
    "load_dataset",
    "fetch",
    "data_roots",
    "cache_dir",
    "file_digest",
    "read_content",
    "load_binarized_mnist",
    "load_mnist_dynamic",
    "load_omniglot",
    "load_mnist_sample",
    "build_mnist_sample",
    "SAMPLE_PATH",
    "random_subset",
]

ENV_DATA = "CONCRETE_EXT_DATA"
ENV_CACHE = "CONCRETE_EXT_CACHE"
DYNAMIC_EVAL_SEED = 2017
OMNIGLOT_BINARIZATION_SEED = 2017
#: Omniglot has no validation split: this many training images (drawn with OMNIGLOT_VALID_SEED,
#: at most a tenth of the file's) are held out for validation, leaving 23,000 to train on
OMNIGLOT_VALID = 1345
OMNIGLOT_VALID_SEED = 2019
SAMPLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mnist_sample.npz")
IMAGE_PIXELS = 784


class DataNotFoundError(FileNotFoundError):
    """A data file is neither on disk nor downloadable."""


class ChecksumError(ValueError):
    """A data file's content does not have the published digest."""


@dataclass(frozen=True)
class Remote:
    """A data file as distributed: its name, folder, canonical addresses and content digest.

    ``digest`` is the hex digest (``algorithm``) of the file's content, after gunzip when the file
    on disk is gzipped, so the canonical file and a recompressed copy both pass.
    """

    name: str
    subdir: str
    urls: Tuple[str, ...]
    digest: str
    algorithm: str = "sha256"
    note: str = ""

    def candidates(self) -> List[str]:
        """File names this file may have on disk (plain and gzipped)."""
        if self.name.endswith(".gz"):
            return [self.name, self.name[:-3]]
        return [self.name, self.name + ".gz"]


_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_LECUN = "http://yann.lecun.com/exdb/mnist/"
_MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_IWAE = "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/"


def _mnist_idx(name: str, digest: str) -> Remote:
    return Remote(name, "mnist", (_LECUN + name, _MNIST_MIRROR + name), digest)


FILES: Dict[str, Remote] = {
    # sha256 of the decompressed .amat: equal to the checksums TensorFlow Datasets publishes for
    # Larochelle's files (see shared/data/SOURCES.md of this project).
    "binarized_mnist_train": Remote(
        "binarized_mnist_train.amat",
        "binarized_mnist",
        (_LAROCHELLE + "binarized_mnist_train.amat",),
        "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    ),
    "binarized_mnist_valid": Remote(
        "binarized_mnist_valid.amat",
        "binarized_mnist",
        (_LAROCHELLE + "binarized_mnist_valid.amat",),
        "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    ),
    "binarized_mnist_test": Remote(
        "binarized_mnist_test.amat",
        "binarized_mnist",
        (_LAROCHELLE + "binarized_mnist_test.amat",),
        "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
    ),
    # sha256 of the decompressed IDX content (the .gz bytes differ between mirrors).
    "mnist_train_images": _mnist_idx(
        "train-images-idx3-ubyte.gz",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "mnist_train_labels": _mnist_idx(
        "train-labels-idx1-ubyte.gz",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "mnist_test_images": _mnist_idx(
        "t10k-images-idx3-ubyte.gz",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "mnist_test_labels": _mnist_idx(
        "t10k-labels-idx1-ubyte.gz",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    # Only an md5 of chardata.mat is published (by public loaders of the IWAE file); no sha256 of it
    # could be computed here, because no copy of the file was available.
    "omniglot": Remote(
        "chardata.mat",
        "omniglot",
        (_IWAE + "chardata.mat",),
        "21ecaf34373511aa7691cf2e0802aa3d",
        algorithm="md5",
        note="the md5 published by public loaders of the IWAE file; the loader was tested only on "
        "a synthetic file of the same layout",
    ),
}


# ---- finding, checking and downloading files -----------------------------------------------------
def cache_dir() -> str:
    """The download cache: ``$CONCRETE_EXT_CACHE`` or ``~/.cache/concrete_ext/data``."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "concrete_ext", "data")


def data_roots(root: Optional[str] = None) -> List[str]:
    """Folders searched for data files, in order: ``root``, ``$CONCRETE_EXT_DATA``, the cache."""
    roots = [root, os.environ.get(ENV_DATA), cache_dir()]
    out = []
    for r in roots:
        if r:
            r = os.path.abspath(os.path.expanduser(r))
            if r not in out:
                out.append(r)
    return out


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_content(path: str) -> bytes:
    """The bytes of a data file, gunzipped when the file is gzipped."""
    if _is_gzip(path):
        with gzip.open(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def file_digest(path: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's content (after gunzip when the file is gzipped)."""
    h = hashlib.new(algorithm)
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str, remote: Remote) -> None:
    """Raise ChecksumError unless the content of ``path`` has the digest of ``remote``."""
    got = file_digest(path, remote.algorithm)
    if got != remote.digest:
        raise ChecksumError(
            f"{path} does not have the content of {remote.name}: its {remote.algorithm} is {got}, "
            f"expected {remote.digest}. The file is corrupt, truncated or a different version. "
            f"Delete it and put the original there (from {remote.urls[0]}), or let it be downloaded "
            "again."
        )


def _where_to_put(remote: Remote, roots: Sequence[str]) -> str:
    folders = [os.path.join(r, remote.subdir) for r in roots]
    return (
        f"Download {remote.name} from {' or '.join(remote.urls)} ({remote.algorithm} of the "
        f"content {remote.digest}) and put it (plain or gzipped) in one of: "
        + ", ".join(folders)
        + f"; or set {ENV_DATA} to a folder holding {remote.subdir}/{remote.name}."
    )


def _download(remote: Remote, dest_dir: str, timeout: float) -> str:
    """Download ``remote`` into ``dest_dir`` (temp file, check, rename); returns the path."""
    os.makedirs(dest_dir, exist_ok=True)
    errors = []
    for url in remote.urls:
        fd, tmp = tempfile.mkstemp(prefix="." + remote.name + ".", suffix=".part", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out, 1 << 20)
            final = os.path.join(dest_dir, remote.name)
            verify(tmp, remote)
            os.replace(tmp, final)
            return final
        except ChecksumError as e:
            errors.append(f"{url}: downloaded, but {e}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataNotFoundError("; ".join(errors))


def fetch(
    key: str, root: Optional[str] = None, download: bool = True, timeout: float = 60.0
) -> str:
    """Path of the checked data file ``FILES[key]``: found on disk, else downloaded into the cache.

    Raises ChecksumError when a file is found with the wrong content, DataNotFoundError (saying
    where to put the file) when it is nowhere and cannot be downloaded.
    """
    remote = FILES[key] if isinstance(key, str) else key
    roots = data_roots(root)
    for r in roots:
        for folder in (os.path.join(r, remote.subdir), r):
            for name in remote.candidates():
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    verify(path, remote)
                    return path
    why = "downloads are disabled"
    if download and os.environ.get("CONCRETE_EXT_OFFLINE", "") not in ("1", "true", "yes"):
        try:
            return _download(remote, os.path.join(cache_dir(), remote.subdir), timeout)
        except DataNotFoundError as e:
            why = f"the download failed ({e})"
    raise DataNotFoundError(
        f"{remote.name} was not found and {why}. " + _where_to_put(remote, roots)
    )


# ---- parsing ---------------------------------------------------------------------------------------
def parse_amat(content: bytes) -> np.ndarray:
    """Larochelle's ``.amat`` text (one image a line, 784 digits 0/1 separated by spaces) as uint8."""
    line = 2 * IMAGE_PIXELS
    if len(content) % line == 0:
        a = np.frombuffer(content, np.uint8).reshape(-1, line)
        if (a[:, 1::2] <= 32).all():  # separators are spaces / newlines: the canonical layout
            digits = a[:, ::2] - ord("0")
            if digits.max(initial=0) <= 1:
                return np.ascontiguousarray(digits)
    x = np.loadtxt(io.BytesIO(content), dtype=np.uint8, ndmin=2)  # any other whitespace layout
    if x.shape[1] != IMAGE_PIXELS or x.max(initial=0) > 1:
        raise ValueError(f"not a binarized-MNIST .amat file: shape {x.shape}, max {x.max()}")
    return x


def parse_idx(content: bytes) -> np.ndarray:
    """An IDX file (big-endian header: magic 0x0000080D with D dims, then the sizes) as uint8."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] != 0x08:
        raise ValueError("not an IDX file of unsigned bytes")
    ndim = content[3]
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(content, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"IDX file truncated: header says {shape}, {data.size} bytes follow")
    return data.reshape(shape)


def _binarize_fixed(grey: np.ndarray, seed: int) -> np.ndarray:
    """One Bernoulli draw per pixel from its grey level in [0, 1], with a fixed seed."""
    rng = np.random.RandomState(seed)
    return (rng.random_sample(grey.shape) < grey).astype(np.uint8)


def random_subset(size: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of min(n, size) of ``size`` images, drawn without replacement with ``seed``.
    Subsets must be random: the splits are not in random order (the first 500 binarized-MNIST test
    images have 20% more pixels on than the average)."""
    if n >= size:
        return np.arange(size)
    return np.sort(np.random.RandomState(seed).choice(size, n, replace=False))


# ---- datasets --------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Splits as (N, 784) arrays: uint8 in {0, 1}, or float32 grey levels in [0, 1] for a
    dynamically binarized training split (``dynamic=True``)."""

    name: str
    train: np.ndarray
    valid: Optional[np.ndarray]
    test: np.ndarray
    dynamic: bool = False
    info: Dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> np.ndarray:
        arr = {"train": self.train, "valid": self.valid, "test": self.test}.get(name)
        if arr is None:
            raise ValueError(f"dataset {self.name} has no {name!r} split")
        return arr

    def train_mean(self) -> np.ndarray:
        """Per-pixel mean of the training data (grey level for a dynamic split, which is the mean
        of its binarizations): the base rate of Appendix D.3."""
        return self.train.astype(np.float64).mean(axis=0)

    def binary(self, name: str, seed: int = DYNAMIC_EVAL_SEED) -> np.ndarray:
        """A split in {0, 1}; a dynamic training split is binarized once with ``seed``."""
        arr = self.split(name)
        if arr.dtype == np.uint8:
            return arr
        return _binarize_fixed(arr, seed)


def load_binarized_mnist(root: Optional[str] = None, download: bool = True) -> Dataset:
    """The paper's MNIST: Salakhutdinov & Murray's fixed binarization, 50k / 10k / 10k."""
    splits = {
        s: parse_amat(read_content(fetch("binarized_mnist_" + s, root, download)))
        for s in ("train", "valid", "test")
    }
    return Dataset(
        "mnist",
        splits["train"],
        splits["valid"],
        splits["test"],
        info={"binarization": "fixed, Salakhutdinov & Murray (2008)"},
    )


def load_mnist_dynamic(root: Optional[str] = None, download: bool = True) -> Dataset:
    """Original MNIST for dynamic binarization: grey train (50k), fixed-seed valid and test."""
    train = parse_idx(read_content(fetch("mnist_train_images", root, download)))
    test = parse_idx(read_content(fetch("mnist_test_images", root, download)))
    grey = train.reshape(len(train), IMAGE_PIXELS).astype(np.float32) / 255.0
    test = test.reshape(len(test), IMAGE_PIXELS).astype(np.float32) / 255.0
    return Dataset(
        "mnist-dynamic",
        grey[:50000],
        _binarize_fixed(grey[50000:], DYNAMIC_EVAL_SEED),
        _binarize_fixed(test, DYNAMIC_EVAL_SEED + 1),
        dynamic=True,
        info={
            "binarization": f"dynamic for train; valid/test fixed with seeds "
            f"{DYNAMIC_EVAL_SEED}/{DYNAMIC_EVAL_SEED + 1}"
        },
    )


def load_omniglot(
    root: Optional[str] = None, download: bool = True, path: Optional[str] = None
) -> Dataset:
    """Omniglot 28x28 of Burda et al.: ``chardata.mat`` keys ``data`` / ``testdata`` (784 x N grey
    levels), binarized once with seed OMNIGLOT_BINARIZATION_SEED. ``path`` reads a given file
    without the checksum (for files of the same layout, e.g. in tests)."""
    import scipy.io

    path = path or fetch("omniglot", root, download)
    mat = (
        scipy.io.loadmat(path)
        if not _is_gzip(path)
        else scipy.io.loadmat(io.BytesIO(read_content(path)))
    )
    for key in ("data", "testdata"):
        if key not in mat:
            raise ValueError(
                f"{path} has no {key!r} array (keys: {sorted(k for k in mat if not k.startswith('__'))})"
            )
        if mat[key].ndim != 2 or mat[key].shape[0] != IMAGE_PIXELS:
            raise ValueError(f"{path}: {key!r} should be 784 x N, got {mat[key].shape}")
    train = np.ascontiguousarray(mat["data"].T.astype(np.float64))
    test = np.ascontiguousarray(mat["testdata"].T.astype(np.float64))
    if train.min() < 0 or train.max() > 1:
        raise ValueError(
            f"{path}: grey levels should lie in [0, 1], got [{train.min()}, {train.max()}]"
        )
    binary = _binarize_fixed(train, OMNIGLOT_BINARIZATION_SEED)  # the whole file, as before
    held = random_subset(len(binary), min(OMNIGLOT_VALID, len(binary) // 10), OMNIGLOT_VALID_SEED)
    keep = np.ones(len(binary), dtype=bool)
    keep[held] = False
    return Dataset(
        "omniglot",
        binary[keep],
        binary[held],
        _binarize_fixed(test, OMNIGLOT_BINARIZATION_SEED + 1),
        info={
            "binarization": f"fixed, seeds {OMNIGLOT_BINARIZATION_SEED} (train) / "
            f"{OMNIGLOT_BINARIZATION_SEED + 1} (test)",
            "validation": f"{len(held)} of the {len(binary)} training images "
            f"held out (seed {OMNIGLOT_VALID_SEED})",
            "pixel_order": "column-major 28x28 (reshape with order='F' to view)",
        },
    )


# ---- the sample shipped with the package ---------------------------------------------------------
SAMPLE_SIZES = {"train": 3000, "valid": 500, "test": 1000}
SAMPLE_SEED = 0


def _sample_digest(arrays: Dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in ("train", "valid", "test"):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k], dtype=np.uint8).tobytes())
    return h.hexdigest()


# sha256 over the unpacked sample (see _sample_digest and build_mnist_sample).
SAMPLE_DIGEST = "0a2385e907992bc76b0299000393f06ae8b73a3dae92025c93b6ff34c81f9c35"


def sample_indices(split: str, size: int) -> np.ndarray:
    """Which images of a full split the shipped sample holds (random, seed SAMPLE_SEED)."""
    return random_subset(size, SAMPLE_SIZES[split], SAMPLE_SEED)


def build_mnist_sample(out_path: str = SAMPLE_PATH, root: Optional[str] = None) -> str:
    """Write the shipped sample: 3,000 / 500 / 1,000 images drawn at random (seed SAMPLE_SEED) from
    the train / valid / test splits of the fixed binarization, bit-packed, in their original
    order. Returns the digest to put in SAMPLE_DIGEST."""
    full = load_binarized_mnist(root, download=True)
    arrays = {s: full.split(s)[sample_indices(s, len(full.split(s)))] for s in SAMPLE_SIZES}
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = out_path + ".tmp.npz"
    np.savez_compressed(tmp, **{s: np.packbits(a, axis=1) for s, a in arrays.items()})
    os.replace(tmp, out_path)
    return _sample_digest(arrays)


def load_mnist_sample(path: str = SAMPLE_PATH) -> Dataset:
    """The binarized-MNIST sample shipped with the package (no download needed)."""
    if not os.path.isfile(path):
        raise DataNotFoundError(
            f"the package's data sample {path} is missing; reinstall "
            "concrete_ext (it ships in concrete_ext/zoo/data/)."
        )
    try:
        with np.load(path) as z:
            arrays = {s: np.unpackbits(z[s], axis=1)[:, :IMAGE_PIXELS] for s in SAMPLE_SIZES}
    except Exception as e:  # noqa: BLE001 - a damaged .npz raises zip, pickle or key errors
        raise ChecksumError(
            f"{path} is damaged and cannot be read ({type(e).__name__}: {e}); "
            "reinstall concrete_ext."
        ) from e
    got = _sample_digest(arrays)
    if got != SAMPLE_DIGEST:
        raise ChecksumError(
            f"{path} is not the shipped sample (sha256 {got}, expected "
            f"{SAMPLE_DIGEST}); reinstall concrete_ext."
        )
    return Dataset(
        "mnist-sample",
        arrays["train"],
        arrays["valid"],
        arrays["test"],
        info={
            "binarization": "fixed, Salakhutdinov & Murray (2008)",
            "sample": f"3000/500/1000 random images (seed {SAMPLE_SEED}) of train/valid/test",
        },
    )


DATASETS = {
    "mnist": load_binarized_mnist,
    "mnist-dynamic": load_mnist_dynamic,
    "omniglot": load_omniglot,
    "mnist-sample": lambda root=None, download=True: load_mnist_sample(),
}


def load_dataset(name: str, root: Optional[str] = None, download: bool = True) -> Dataset:
    """Load dataset ``name`` (one of DATASETS) from disk, downloading what is missing."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name](root=root, download=download)


def describe_files(keys: Iterable[str] = tuple(FILES)) -> str:
    """A table of the files: name, folder, address, digest (for the docs and the CLI)."""
    rows = [
        f"{FILES[k].subdir}/{FILES[k].name}  {FILES[k].urls[0]}  "
        f"{FILES[k].algorithm}:{FILES[k].digest}"
        for k in keys
    ]
    return "\n".join(rows)

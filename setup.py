"""Build of concrete_ext._C: the CPU kernels always, the CUDA kernels whenever torch is a CUDA build
and nvcc is found (no GPU needed to compile them).

Environment:
  CONCRETE_EXT_SKIP_CUDA=1     build the CPU kernels only.
  CONCRETE_EXT_REQUIRE_CUDA=1  fail (instead of falling back to a CPU-only build) when the CUDA
                               kernels cannot be built; CI sets it.
  TORCH_CUDA_ARCH_LIST         CUDA archs, e.g. "9.0"; default: the visible GPUs', or
                               "8.0;9.0+PTX" when none is visible.
  MAX_JOBS                     parallel compile jobs; default: CPUs, capped at one per 3 GiB of RAM.
  CUDA_HOME                    the CUDA toolkit; default: /usr/local/cuda, else found from nvcc.

Build against the torch already installed, without build isolation:
  pip install --no-build-isolation .
"""

from __future__ import annotations

import datetime
import glob
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"


def fail(msg: str):
    sys.stderr.write("\n" + "=" * 78 + "\nconcrete_ext build: " + msg + "\n" + "=" * 78 + "\n\n")
    raise SystemExit(1)


def note(msg: str):
    sys.stderr.write("concrete_ext build: " + msg + "\n")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# ---- the toolchain ------------------------------------------------------------------------------
if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
    fail(
        "no C++ compiler found (looked for $CXX, c++ and g++). Install one, e.g. "
        "`apt-get install g++`, then rerun the install."
    )


def find_cuda_home():
    """CUDA_HOME, /usr/local/cuda, or the toolkit nvcc belongs to (following wrapper scripts)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:  # nvcc --version does not print its location; ask it for the include dir instead
        out = subprocess.run(
            [nvcc, "-v", "--dryrun", "-x", "cu", "-c", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        ).stderr
        for line in out.splitlines():
            if "TOP=" in line:
                return os.path.realpath(line.split("TOP=", 1)[1].strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


CUDA_HOME = None if env_flag("CONCRETE_EXT_SKIP_CUDA") else find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME  # before torch.utils.cpp_extension reads it

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    fail(
        "PyTorch is not installed. Install it first (e.g. `pip install torch`), then build this "
        "package against it with `pip install --no-build-isolation .`"
    )

TORCH_CUDA = torch.version.cuda
WANT_CUDA = not env_flag("CONCRETE_EXT_SKIP_CUDA")
if WANT_CUDA and TORCH_CUDA is None:
    note("torch " + torch.__version__ + " is a CPU-only build: building the CPU kernels only.")
    WANT_CUDA = False
if WANT_CUDA and CUDA_HOME is None:
    note("nvcc not found (set CUDA_HOME or put nvcc on PATH): building the CPU kernels only.")
    WANT_CUDA = False
if env_flag("CONCRETE_EXT_REQUIRE_CUDA") and not WANT_CUDA:
    fail("CONCRETE_EXT_REQUIRE_CUDA=1 but the CUDA kernels cannot be built (see above).")


def cuda_arch_list() -> str:
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    archs = []
    try:
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            archs.append(f"{major}.{minor}")
    except Exception:  # noqa: BLE001 - no driver is fine, we compile without a GPU
        archs = []
    arch_list = ";".join(sorted(set(archs))) if archs else "8.0;9.0+PTX"
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    return arch_list


def nvidia_include_dirs():
    """Headers torch's CUDA build includes that pip puts under site-packages/nvidia/*/include
    (cusparse.h, cublas, curand, ...) rather than in the toolkit."""
    dirs = []
    for base in {
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
        os.path.dirname(os.path.dirname(torch.__file__)),
    }:
        for pattern in ("nvidia/cu*/include", "nvidia/*/include"):
            dirs.extend(sorted(glob.glob(os.path.join(base, pattern))))
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def cap_jobs():
    """Parallel compile jobs: one per CPU, at most one per 3 GiB of RAM (nvcc needs ~2-3 GiB)."""
    if os.environ.get("MAX_JOBS"):
        return
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = 8
    jobs = max(1, min(os.cpu_count() or 1, int(mem_gib // 3)))
    os.environ["MAX_JOBS"] = str(jobs)


def write_build_info(with_cuda: bool, archs: str):
    path = os.path.join(HERE, "csrc", "include", "concrete_ext", "build_info.h")
    text = (
        "// Generated by setup.py at build time; do not edit.\n#pragma once\n"
        f'#define CE_VERSION "{VERSION}"\n'
        f'#define CE_TORCH_VERSION "{torch.__version__}"\n'
        f'#define CE_CUDA_VERSION "{TORCH_CUDA or ""}"\n'
        f'#define CE_CUDA_ARCHS "{archs if with_cuda else ""}"\n'
        f'#define CE_BUILD_DATE "{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}"\n'
    )
    old = open(path).read() if os.path.exists(path) else None
    if old is None or old.split("CE_BUILD_DATE")[0] != text.split("CE_BUILD_DATE")[0]:
        with open(path, "w") as f:
            f.write(text)


# csrc/host: the torch side of every op (both devices); csrc/cpu and csrc/cuda: the kernels, one
# file per op family and device.
CPU_SOURCES = sorted(
    glob.glob("csrc/host/*.cpp", root_dir=HERE) + glob.glob("csrc/cpu/*.cpp", root_dir=HERE)
)
CUDA_SOURCES = sorted(glob.glob("csrc/cuda/*.cu", root_dir=HERE))
INCLUDE_DIRS = [os.path.join(HERE, "csrc", "include"), os.path.join(HERE, "csrc")]
CXX_FLAGS = ["-O3", "-g0", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]
NVCC_FLAGS = ["-O3", "--expt-relaxed-constexpr", "-lineinfo", "-Xptxas=-warn-spills"]


def make_extension(with_cuda: bool):
    archs = cuda_arch_list() if with_cuda else ""
    write_build_info(with_cuda, archs)
    if with_cuda:
        return cpp_extension.CUDAExtension(
            "concrete_ext._C",
            sources=CPU_SOURCES + CUDA_SOURCES,
            include_dirs=INCLUDE_DIRS + nvidia_include_dirs(),
            define_macros=[("CE_WITH_CUDA", "1")],
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
            extra_link_args=["-fopenmp"],
        )
    return cpp_extension.CppExtension(
        "concrete_ext._C",
        sources=CPU_SOURCES,
        include_dirs=INCLUDE_DIRS,
        extra_compile_args={"cxx": CXX_FLAGS},
        extra_link_args=["-fopenmp"],
    )


class BuildExtension(cpp_extension.BuildExtension):
    """Falls back to a CPU-only build, with a clear message, when the CUDA kernels fail to compile
    (unless CONCRETE_EXT_REQUIRE_CUDA=1)."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            if not any(s.endswith(".cu") for s in ext.sources) or env_flag(
                "CONCRETE_EXT_REQUIRE_CUDA"
            ):
                fail(f"compiling {ext.name} failed: {e}. The compiler output above says where.")
            note(
                f"the CUDA kernels failed to compile ({e}); building the CPU kernels only. "
                "Set CONCRETE_EXT_REQUIRE_CUDA=1 to make this an error."
            )
            cpu = make_extension(False)
            ext.sources = cpu.sources
            ext.include_dirs = cpu.include_dirs
            ext.define_macros = cpu.define_macros
            ext.extra_compile_args = cpu.extra_compile_args
            ext.extra_link_args = cpu.extra_link_args
            ext.libraries = cpu.libraries
            ext.library_dirs = cpu.library_dirs
            self.compiler.compiler_so = [a for a in self.compiler.compiler_so]
            super().build_extension(ext)


cap_jobs()
note(
    f"torch {torch.__version__} (CUDA {TORCH_CUDA}), CUDA kernels: "
    f"{'yes, archs ' + cuda_arch_list() + ', CUDA_HOME ' + str(CUDA_HOME) if WANT_CUDA else 'no'}, "
    f"MAX_JOBS={os.environ['MAX_JOBS']}"
)

setup(
    name="concrete_ext",
    version=VERSION,
    packages=find_packages(include=["concrete_ext", "concrete_ext.*"]),
    package_data={"concrete_ext.zoo": ["data/*.npz", "data/*.json"]},
    ext_modules=[make_extension(WANT_CUDA)],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)

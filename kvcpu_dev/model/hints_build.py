"""cffi build script for ``kvcpu_dev.model._hints``: the model's hint
doorbells (hints.c) and the blocks file's rows (rows.c) in C, the model's
own extension, apart from the fast path's (``kvcpu_dev.native._fuse``): the
model sees register writes only.

The registers and the counters' order come from the device's tables
(device/regs.py, device/model_text.py), imported from the source tree as
native/build.py does.  The model's own constants below cannot be imported
here (the model's modules load numpy, which a build does not have);
model/fast.py checks them against the Python's at import."""

from __future__ import annotations

import pathlib
import sys

import cffi

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = HERE.parent

#: The model's constants the engine shares (checked by model/fast.py).
MODEL_CONSTANTS = {
    "KVM_NO_MOVE": -1,  # rtbd.NO_MOVE
    "KVM_REQUEST_UNKNOWN": 0xFFFF,  # rtbd.REQUEST_UNKNOWN
    "KVM_T1": 1,  # config.T1
    "KVM_PROMOTE": 1,  # dma.PROMOTE
    "KVM_SMALL_HINT": 64,  # device._SMALL_HINT: a hint over more blocks is Python's (it slices them)
}


def generated_defines() -> dict[str, int]:
    sys.path.insert(0, str(PACKAGE.parent))
    try:
        from kvcpu_dev.device import model_text, regs
    finally:
        sys.path.pop(0)
    defines = {f"KVM_REG_{name}": offset for offset, name in regs.NAMES.items()}
    defines.update({f"KVM_C_{name}": k for k, name in enumerate(model_text.COUNTERS)})
    defines.update(MODEL_CONSTANTS)
    return defines


def builder() -> cffi.FFI:
    defines = generated_defines()
    ffi = cffi.FFI()
    headers = "".join((HERE / name).read_text() for name in ("hints.h", "rows.h"))
    ffi.cdef("".join(f"#define {name} ...\n" for name in defines) + headers)
    ffi.set_source(
        "kvcpu_dev.model._hints",
        '#include <stdint.h>\n#include "hints.h"\n#include "rows.h"\n',
        sources=[str((HERE / name).relative_to(PACKAGE.parent)) for name in ("hints.c", "rows.c")],
        define_macros=[(name, str(value)) for name, value in defines.items()],
        include_dirs=[str(HERE)],
        extra_compile_args=["-O2", "-Wall"],
    )
    return ffi


ffibuilder = builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

"""mosaicml-streaming's submodules (MDS reading and writing) without running its package `__init__`.

Why: `import streaming` runs streaming/__init__.py, which imports streaming.vision and through it torchvision.
Where torchvision is missing, or built for another torch (the usual case beside a pinned CPU-only torch), that
import fails, although the MDS modules (streaming.base.format, streaming.base.compression) need no torchvision.
So when the package `__init__` fails on torchvision, a bare package module (the same `__path__`, no
`__init__` run) takes its place in sys.modules, and the submodules import from it as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from longmix.core.errors import UserError

_INSTALL = ("reading/writing MDS needs mosaicml-streaming: pip install --no-deps mosaicml-streaming==0.13.0 "
            "xxhash zstd catalogue")


def _torchvision_failure(exc: BaseException) -> bool:
    """The import failed inside torchvision (missing, or its C++ ops built for another torch)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and (seen.name or "").split(".")[0] == "torchvision":
            return True
        if "torchvision" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _missing_dependency(exc: ModuleNotFoundError) -> UserError:
    name = (exc.name or "").split(".")[0]
    return UserError(_INSTALL if name in ("", "streaming") else f"{_INSTALL} (missing module {name})")


def load_streaming() -> types.ModuleType:
    """The `streaming` package module: the real one when it imports, else a bare one whose submodules import
    without the package `__init__` (see the module docstring). A UserError when mosaicml-streaming is not
    installed."""
    if "streaming" in sys.modules:
        return sys.modules["streaming"]
    spec = importlib.util.find_spec("streaming")
    if spec is None or spec.submodule_search_locations is None:
        raise UserError(_INSTALL)
    try:
        return importlib.import_module("streaming")
    except ModuleNotFoundError as exc:
        if not _torchvision_failure(exc):
            raise _missing_dependency(exc) from None
    except Exception as exc:  # torchvision present but broken: RuntimeError/ImportError from its ops
        if not _torchvision_failure(exc):
            raise
    bare = types.ModuleType("streaming")
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__file__ = spec.origin
    bare.__spec__ = spec
    bare.__package__ = "streaming"
    sys.modules["streaming"] = bare
    for name, module in list(sys.modules.items()):  # submodules the failed __init__ had already imported
        if name.count(".") == 1 and name.startswith("streaming."):
            setattr(bare, name.split(".", 1)[1], module)
    return bare


def import_streaming_module(name: str) -> types.ModuleType:
    """`importlib.import_module(name)` for a streaming submodule, e.g. "streaming.base.format", after
    `load_streaming()`; a missing mosaicml-streaming or dependency of it is a one-line UserError."""
    load_streaming()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "streaming":
            raise  # a wrong submodule name: a bug here, not the user's install
        raise _missing_dependency(exc) from None

"""Import mosaicml-streaming's format modules without its package `__init__`.

`import streaming` imports its vision datasets, which import torchvision, and torchvision's wheels do not load
beside the CPU torch longmix pins ("operator torchvision::nms does not exist"). MDS reading and writing need
none of that: when the package import fails on torchvision, the package is registered bare (its folder, not
its `__init__`) and only the submodules asked for are imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from longmix.core.errors import UserError

INSTALL_HINT = "pip install --no-deps mosaicml-streaming==0.13.0 xxhash zstd catalogue"


def import_streaming_module(name: str) -> types.ModuleType:
    """`importlib.import_module(name)` for a `streaming.*` module, with the bypass above when it is needed."""
    if "streaming" not in sys.modules:
        try:
            importlib.import_module("streaming")
        except ModuleNotFoundError as exc:
            if exc.name == "streaming":
                raise UserError(f"reading/writing MDS needs mosaicml-streaming: {INSTALL_HINT}") from None
            if not (exc.name or "").startswith("torchvision"):
                raise
            spec = importlib.util.find_spec("streaming")
            assert spec is not None and spec.submodule_search_locations is not None
            bare = types.ModuleType("streaming")
            bare.__path__ = list(spec.submodule_search_locations)
            bare.__spec__ = spec
            sys.modules["streaming"] = bare
        except ImportError as exc:  # a partial install: name what is missing in one line
            raise UserError(f"mosaicml-streaming does not import ({exc}): {INSTALL_HINT}") from None
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise UserError(f"mosaicml-streaming needs '{exc.name}' here: {INSTALL_HINT}") from None

"""Load workflow definitions from ``"pkg.module:attr"`` references, for the command line.

``durable check --workflows shop:checkout`` and ``durable fork --definition shop:checkout``
name the code that defines the workflows the way ``python -m`` and most Python tools do: a
module to import and an attribute of it. The attribute (a dotted path is allowed:
``app.flows:registry.checkout``) may be one :class:`~durable.definition.Workflow`, or a list,
tuple or dict (its values) of them.

The current directory is importable, as it is for ``python -m``: a ``shop.py`` next to you
is found as ``shop``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from .definition import ForkBuilder, Step, Workflow
from .errors import DurableError

__all__ = ["load_workflows", "parse_ref"]

_FORM = "write it as 'pkg.module:attr', e.g. 'shop:checkout'"


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``"pkg.module:attr"`` into the module name and the attribute path.

    Raises:
        DurableError: the reference is not of that form.
    """
    module, sep, attr = ref.strip().partition(":")
    if not sep or not module or not attr:
        raise DurableError(f"{ref!r} is not a reference to workflows; {_FORM}")
    if module.endswith(".py") or "/" in module or "\\" in module:
        name = module.removesuffix(".py").replace("\\", "/").split("/")[-1]
        raise DurableError(
            f"{ref!r} names a file; name the module instead ('{name}:{attr}', run from its directory "
            "or with it on PYTHONPATH), as in 'pkg.module:attr'"
        )
    names = [*module.split("."), *attr.split(".")]
    if not all(name.isidentifier() for name in names):
        raise DurableError(f"{ref!r} is not a reference to workflows (a name in it is not a Python name); {_FORM}")
    return module, attr


def _import(module: str, ref: str) -> ModuleType:
    cwd = os.getcwd()
    # Like `python -m`: the current directory comes first. It stays on the path, as it does
    # for `python -m`: a step that imports a sibling module later must still find it.
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module or module.startswith(missing + "."):
            raise DurableError(
                f"{ref}: no module named {missing!r} (looked in the current directory {cwd} and on sys.path); "
                "run from the directory that holds it, or set PYTHONPATH"
            ) from None
        raise DurableError(f"{ref}: importing {module!r} failed: ModuleNotFoundError: {exc}") from None
    except Exception as exc:  # the user's module raised while importing: say which and what
        raise DurableError(f"{ref}: importing {module!r} failed: {type(exc).__name__}: {exc}") from None


def _describe(value: Any) -> str:
    if isinstance(value, ForkBuilder):
        return "a workflow whose fork is still open (close it with .join(step))"
    if isinstance(value, Step):
        return f"the step {value.name!r} (make it a workflow: Workflow('name').then(step))"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if callable(value):
        return f"the callable {getattr(value, '__name__', type(value).__name__)}"
    kind = type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def _workflows_in(value: Any, ref: str) -> list[Workflow]:
    if isinstance(value, Workflow):
        return [value.build()]
    items: Iterable[tuple[object, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        raise DurableError(
            f"{ref} is {_describe(value)}, not a Workflow; point it at a Workflow, or a list, tuple or dict of them"
        )
    found: list[Workflow] = []
    for key, item in items:
        if not isinstance(item, Workflow):
            raise DurableError(f"{ref}[{key!r}] is {_describe(item)}, not a Workflow")
        found.append(item.build())
    if not found:
        raise DurableError(f"{ref} is an empty {type(value).__name__}; it names no workflow")
    return found


def load_workflows(refs: Iterable[str]) -> list[Workflow]:
    """Import every ``"pkg.module:attr"`` reference and return the workflows they name, in order.

    Raises:
        DurableError: a reference is malformed, its module cannot be imported (or raises while
            importing), the attribute is missing, or it is not a workflow (nor a list, tuple or
            dict of them). The message names the reference.
    """
    out: list[Workflow] = []
    for ref in refs:
        module_name, attr = parse_ref(ref)
        value: Any = _import(module_name, ref)
        walked = module_name
        for name in attr.split("."):
            if not hasattr(value, name):
                raise DurableError(f"{ref}: {walked!r} has no attribute {name!r}")
            value = getattr(value, name)
            walked = f"{walked}:{name}" if walked == module_name else f"{walked}.{name}"
        out.extend(_workflows_in(value, ref))
    return out

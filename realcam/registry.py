"""Name -> factory registries, timm style, plus entry-point plugin discovery.

A registry maps a short name (``"plucker"``) to a class or factory. Third-party packages add
entries by exposing a module under the ``realcam.plugins`` entry-point group; importing that
module runs its ``@REGISTRY.register`` decorators. :func:`load_plugins` does this once.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import logging
from typing import Any, Callable, Generic, Iterator, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
PLUGIN_GROUP = "realcam.plugins"


class UnknownNameError(KeyError):
    """Raised for a name no registry entry has; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


class Registry(Generic[T]):
    """A typed mapping from names to factories (classes or functions returning ``T``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None, *, override: bool = False) -> Callable:
        """Decorator: ``@REG.register("name")`` or ``@REG.register()`` (uses ``__name__``)."""

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            key = name or obj.__name__
            if key in self._entries and not override and self._entries[key] is not obj:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered by {_qualname(self._entries[key])}; "
                    f"pick another name or pass override=True"
                )
            self._entries[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "."
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} Registered: {', '.join(self.list()) or '(none)'}"
            ) from None

    def build(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(k for k in self._entries if fnmatch.fnmatch(k, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


CAMERA_ENCODERS: Registry = Registry("camera encoder")
ATTENTION_BACKENDS: Registry = Registry("attention backend")
BACKBONES: Registry = Registry("backbone")
CODECS: Registry = Registry("latent codec")
LOOPAUG_STRATEGIES: Registry = Registry("LoopAug strategy")
MULTIVIEW_SOURCES: Registry = Registry("multiview source")

ALL_REGISTRIES = {
    "camera_encoders": CAMERA_ENCODERS,
    "attention_backends": ATTENTION_BACKENDS,
    "backbones": BACKBONES,
    "codecs": CODECS,
    "loopaug_strategies": LOOPAUG_STRATEGIES,
    "multiview_sources": MULTIVIEW_SOURCES,
}

_plugins_loaded = False


def load_plugins(force: bool = False) -> list[str]:
    """Import every module registered under the ``realcam.plugins`` entry-point group, once.

    Returns the names of the entry points loaded. A plugin that fails to import is logged and
    skipped, so one broken third-party package cannot take the CLI down.
    """
    global _plugins_loaded
    if _plugins_loaded and not force:
        return []
    _plugins_loaded = True
    loaded = []
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
            loaded.append(ep.name)
        except Exception as err:  # a broken plugin must not break realcam itself
            log.warning("realcam plugin %r (%s) failed to load: %s", ep.name, ep.value, err)
    return loaded

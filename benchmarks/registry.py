"""Name -> factory registries (methods, datasets), filled by decorators and entry points.

Modelled on timm's ``@register_model``: a module registers its objects when imported, and
``Registry.load_entry_points`` imports every module named in the entry-point group
``samplerbench.<kind>`` so that a sampler in another package registers without a fork.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any


class RegistryError(KeyError):
    """An unknown or duplicate name."""

    def __str__(self) -> str:  # KeyError quotes its message; a registry error reads as a sentence
        return str(self.args[0])


class Registry:
    """A named collection of factories for one kind of object."""

    def __init__(self, kind: str):
        self.kind = kind
        self.group = f"samplerbench.{kind}"
        self._items: dict[str, Any] = {}
        self._sources: dict[str, str] = {}
        self._meta: dict[str, dict] = {}
        self._loaded = False

    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        """Decorator: ``@METHODS.register("uniform")`` on a class or factory function."""

        def deco(obj: Any) -> Any:
            src = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
            if name in self._items and self._sources[name] != src:
                raise RegistryError(
                    f"{self.kind} '{name}' is registered twice: by {self._sources[name]} and by {src}"
                )
            self._items[name] = obj
            self._sources[name] = src
            self._meta[name] = dict(meta)
            return obj

        return deco

    def load_entry_points(self) -> None:
        """Import every module of the entry-point group once (built-ins use the same path)."""
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=self.group):
            ep.load()

    def get(self, name: str) -> Any:
        self.load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise RegistryError(f"unknown {self.kind} '{name}' (registered: {known})") from None

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._items)

    def meta(self, name: str) -> dict:
        """What was declared with the registration (a dataset's ``params`` dataclass, say)."""
        self.get(name)
        return self._meta[name]

    def source(self, name: str) -> str:
        self.get(name)
        return self._sources[name]

    def __contains__(self, name: str) -> bool:
        self.load_entry_points()
        return name in self._items


METHODS = Registry("methods")
DATASETS = Registry("datasets")

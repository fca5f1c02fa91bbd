"""One registry of model classes by name, and one factory that builds them from config data.

A checkpoint stores a model's registered name and its config dataclass as JSON; this module
turns that back into a module, so export and evaluation never import a model class directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from synthmed.errors import CheckpointError

_MODELS: dict[str, tuple[type[nn.Module], type]] = {}

M = TypeVar("M", bound=type[nn.Module])


def register_model(name: str, config_cls: type) -> Callable[[M], M]:
    """Class decorator: make `cls(config)` buildable as `create_model(name, ...)`."""

    def decorator(cls: M) -> M:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = (cls, config_cls)
        return cls

    return decorator


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_MODELS)


def model_config_class(name: str) -> type:
    """The config dataclass that model `name` is built from."""
    if name not in _MODELS:
        raise CheckpointError(f"unknown model {name!r} (known: {', '.join(list_models())})")
    return _MODELS[name][1]


def config_from_dict(name: str, data: dict[str, Any]) -> Any:
    """Rebuild model `name`'s config from JSON data, refusing fields it does not know."""
    config_cls = model_config_class(name)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"model {name!r}: unknown config fields {unknown}")
    try:
        return config_cls(**data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"model {name!r}: invalid config ({e})") from e


def create_model(name: str, config: Any) -> nn.Module:
    """Build model `name` from its config dataclass (or a dict of its fields)."""
    config_cls = model_config_class(name)
    if isinstance(config, dict):
        config = config_from_dict(name, config)
    if not isinstance(config, config_cls):
        raise TypeError(
            f"model {name!r} takes a {config_cls.__name__}, got {type(config).__name__}"
        )
    return _MODELS[name][0](config)

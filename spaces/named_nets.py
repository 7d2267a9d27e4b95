"""Networks named by the user: ``torchvision:NAME`` (any image-classification model of
``torchvision.models``, built with ``weights=None``) and ``py:MODULE:FUNCTION`` (a function
returning an ``nn.Module``, imported from the current folder or an installed package). Either
takes keyword arguments after ``?``: ``torchvision:vit_b_16?image_size=32&patch_size=8``;
each value is read as a Python literal (``8``, ``0.5``, ``True``, ``'a'``) or else as text.

The network is adapted to the data in one way: its first convolution is rebuilt for the
data's channels and its last linear layer for the data's classes (fresh weights, every other
setting kept), where they differ, and a BatchNorm momentum below PyTorch's default 0.1 is
raised to it (short trials evaluate on running statistics). ``adapt`` says what it changed;
the document records it.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, TypeVar, cast

from torch import nn

from bwbpf.spaces.errors import ConfigError

PREFIXES = ("torchvision:", "py:")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# torchvision builders that make one family: transfer carries a decoupling between members.
_FAMILIES = (("resnet", r"^(resnet\d+|resnext\d+_\w+|wide_resnet\d+_\d)$"),
             ("efficientnet", r"^efficientnet_b\d$"), ("efficientnet_v2", r"^efficientnet_v2_\w$"),
             ("regnet_x", r"^regnet_x_\w+$"), ("regnet_y", r"^regnet_y_\w+$"),
             ("mobilenet_v3", r"^mobilenet_v3_\w+$"), ("convnext", r"^convnext_\w+$"),
             ("vit", r"^(vit_\w+|VisionTransformer)$"), ("densenet", r"^densenet\d+$"),
             ("vgg", r"^vgg\d+(_bn)?$"), ("swin", r"^swin_(v2_)?\w$"),
             ("mnasnet", r"^mnasnet\d_\d+$"), ("shufflenet", r"^shufflenet_v2_x\d_\d$"))


def file_stem(name: str) -> str:
    """``name`` fit for a file or folder name: every character but letters, digits, ``.``,
    ``_`` and ``-`` becomes ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def is_named(name: str) -> bool:
    """Whether ``name`` names a network (rather than one of the tool's own backbones)."""
    return isinstance(name, str) and name.startswith(PREFIXES)


@dataclass(frozen=True)
class NetName:
    """A parsed network name: where it comes from, what to call and with which arguments."""

    text: str
    source: str  # "torchvision" or "py"
    module: str
    function: str
    args: tuple[tuple[str, Any], ...]

    @property
    def family(self) -> str:
        """The family transfer keeps to: torchvision's own families; a user's function is a
        family of one (its arguments may change)."""
        if self.source == "torchvision":
            for family, pattern in _FAMILIES:
                if re.match(pattern, self.function):
                    return f"torchvision:{family}"
            return f"torchvision:{self.function}"
        return f"py:{self.module}:{self.function}"


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def parse_name(text: str) -> NetName:
    """``text`` parsed; a ConfigError line naming what is wrong with it."""
    head, _, query = text.partition("?")
    args: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not _NAME.match(key) or key in args:
            raise ConfigError(f"backbone {text!r}: {part!r} is not key=value with a new key")
        args[key] = _literal(value)
    if head.startswith("torchvision:"):
        module, function = "torchvision.models", head[len("torchvision:"):]
    elif head.startswith("py:"):
        module, _, function = head[len("py:"):].rpartition(":")
        if not _MODULE.match(module):
            raise ConfigError(f"backbone {text!r}: write py:MODULE:FUNCTION (e.g. py:mynets:small)")
    else:
        raise ConfigError(f"backbone {text!r}: a network is named torchvision:NAME or "
                          "py:MODULE:FUNCTION")
    if not _NAME.match(function):
        raise ConfigError(f"backbone {text!r}: {function!r} is not a function name")
    return NetName(text, head.partition(":")[0], module, function, tuple(sorted(args.items())))


def _torchvision_builder(n: NetName) -> Callable[..., Any]:
    from torchvision import models  # heavy; a named torchvision network needs it

    names = set(models.list_models(module=models))
    if n.function in names:
        return models.get_model_builder(n.function)
    cls = getattr(models, n.function, None)
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        return cls
    raise ConfigError(f"backbone {n.text}: torchvision has no classification model "
                      f"{n.function!r}; valid: {', '.join(sorted(names))}")


def _user_builder(n: NetName) -> Callable[..., Any]:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the current folder, as `python -m` would
    try:
        module = importlib.import_module(n.module)
    except Exception as e:  # noqa: BLE001 - importing user code raises anything; one line
        raise ConfigError(f"backbone {n.text}: module {n.module!r} does not import "
                          f"({type(e).__name__}: {str(e).strip()[:200]})") from None
    fn = getattr(module, n.function, None)
    if not callable(fn):
        raise ConfigError(f"backbone {n.text}: module {n.module!r} has no function "
                          f"{n.function!r}")
    return fn


@lru_cache(maxsize=64)
def builder(text: str) -> tuple[NetName, Callable[..., Any]]:
    n = parse_name(text)
    return n, (_torchvision_builder(n) if n.source == "torchvision" else _user_builder(n))


def instantiate(text: str) -> nn.Module:
    """A fresh network named ``text`` (random weights; torchvision's with ``weights=None``)."""
    n, make = builder(text)
    kwargs = dict(n.args)
    if n.source == "torchvision" and n.function[:1].islower():
        kwargs.setdefault("weights", None)
    try:
        model = make(**kwargs)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the builder is the user's; one line
        raise ConfigError(f"backbone {text}: building it failed ({type(e).__name__}: "
                          f"{str(e).strip()[:200]})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"backbone {text}: {n.function} returned a {type(model).__name__}, "
                          "not an nn.Module")
    return model


M = TypeVar("M", bound=nn.Module)


def _first(model: nn.Module, kind: type[M], last: bool = False) -> tuple[str, M] | None:
    """The first (or last) module of exactly type ``kind``, with its name."""
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, kind) and type(m) is kind]
    return (found[-1] if last else found[0]) if found else None


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


# BatchNorm's running statistics follow at least this share of each batch (PyTorch's default):
# at torchvision's 0.01 (MobileNetV3, EfficientNet) a trial of a few hundred steps evaluates
# with statistics still half their initial values, at chance accuracy.
BN_MOMENTUM = 0.1


def adapt(model: nn.Module, in_channels: int, num_classes: int) -> dict[str, Any]:
    """Rebuilds the first Conv2d for ``in_channels`` and the last Linear for ``num_classes``
    where they differ, and raises a BatchNorm momentum below ``BN_MOMENTUM`` to it; what was
    changed, as {"first_conv": [name, old, new], "batchnorm_momentum": [layers, lowest old,
    new], "last_linear": [name, old, new]}."""
    changed: dict[str, Any] = {}
    conv = _first(model, nn.Conv2d)
    if conv is not None and conv[1].in_channels != in_channels:
        name, c = conv
        if c.groups != 1:
            raise ConfigError(f"first convolution {name}: grouped, cannot take "
                              f"{in_channels} channels")
        pair = cast(tuple[int, int], c.kernel_size)
        _replace(model, name, nn.Conv2d(in_channels, c.out_channels, pair,
                                        cast(tuple[int, int], c.stride),
                                        cast(str, c.padding) if isinstance(c.padding, str)
                                        else cast(tuple[int, int], c.padding),
                                        cast(tuple[int, int], c.dilation), 1,
                                        c.bias is not None, c.padding_mode))
        changed["first_conv"] = [name, c.in_channels, in_channels]
    slow = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.momentum is not None and m.momentum < BN_MOMENTUM]
    if slow:
        changed["batchnorm_momentum"] = [len(slow), min(float(m.momentum or 0) for m in slow),
                                         BN_MOMENTUM]
        for m in slow:
            m.momentum = BN_MOMENTUM
    linear = _first(model, nn.Linear, last=True)
    if linear is not None and linear[1].out_features != num_classes:
        name, fc = linear
        _replace(model, name, nn.Linear(fc.in_features, num_classes, fc.bias is not None))
        changed["last_linear"] = [name, fc.out_features, num_classes]
    return changed

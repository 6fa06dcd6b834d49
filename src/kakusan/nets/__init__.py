"""Networks F(x, c_noise, cond), built by name from a registry (like the process registry).

Every net answers for itself: ``image_shape`` (what it denoises), ``cond_type`` (none | class | tokens),
``null_cond`` / ``null_like`` (the condition meaning "no condition"), ``cond_from_labels``, ``features`` (intermediate
activations, e.g. for a discriminator) and ``diffusers_parts`` (sub-models stored in diffusers' own layout, so that
diffusers alone can open them). A net's config is a dataclass with a ``kind`` naming its registry entry.
"""
from __future__ import annotations

from .. import KakusanError
from ..utils.configs import from_dict
from .mlp import MLPConfig, MLPNet
from .unet import COND_TYPES, PRESETS, TIME_CONDITIONINGS, UNetConfig, UNetNet, check_preset, check_time_conditioning

NETS = {"unet": (UNetConfig, UNetNet), "mlp": (MLPConfig, MLPNet)}

NetConfig = UNetConfig  # the default net


def net_config_from_dict(d: dict):
    """The config dataclass stored as ``net`` in a model folder's config.json."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in NETS:
        raise KakusanError(f"unknown net kind {kind!r}; known: {', '.join(NETS)}")
    return from_dict(NETS[kind][0], d)


def build_net(config):
    """A fresh net for a config dataclass (or its dict)."""
    if isinstance(config, dict):
        config = net_config_from_dict(config)
    return NETS[config.kind][1](config)


__all__ = ["COND_TYPES", "NETS", "PRESETS", "TIME_CONDITIONINGS", "MLPConfig", "MLPNet", "NetConfig", "UNetConfig",
           "UNetNet", "build_net", "check_preset", "check_time_conditioning", "net_config_from_dict"]

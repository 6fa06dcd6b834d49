"""Reaching inside a diffusers UNet through attention processors (no forked UNet code): what EmerDiff
(Namekata et al. 2024, sec. 3) needs from the attention layers.

One :class:`Probe` is shared by a processor on every attention layer. It can
* **record the queries** Q = W_q h of one layer (the low-resolution features that k-means clusters, sec. 3.2);
* **record the attention maps** softmax(Q K^T / sqrt(d)) of every layer at every network call (stored in half
  precision: at Stable Diffusion's 64 x 64 latent the five 4096-token self-attention layers alone hold 8 x 4096^2
  weights each), and **replay** them in later calls (the "attention injection" that keeps the layout of the modulated
  runs fixed, sec. 3.3, Table 9) — one stored map serves the whole batch: P_h (V_1,h | ... | V_B,h) is one matrix
  product, so no per-sample copy of P is made;
* **modulate** one layer: its output becomes f(softmax(Q K^T / sqrt(d)) V) + c M, where f is the output projection,
  M a mask over the layer's tokens (its spatial positions) and c a per-sample scalar (+lambda or -lambda) — sec. 3.3 —
  at every call or only at the calls in ``mod_calls``; without ``mod``, the RMS of that layer's output at each call
  is kept in ``scales`` (the activation scale a relative lambda is measured against).

The processor computes attention as diffusers' plain ``AttnProcessor`` does (same steps, so an un-probed UNet and a
probed one agree), with the attention map made explicit so that it can be recorded or replaced.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import KakusanError


def attention_layers(unet: nn.Module, cross_only: bool = False) -> list[str]:
    """Names of the attention layers of a diffusers UNet, in the order it registers them (e.g.
    ``up_blocks.0.attentions.0.transformer_blocks.0.attn2``); ``cross_only``: only cross-attention (``attn2``)."""
    names = [k[: -len(".processor")] for k in unet.attn_processors]
    return [n for n in names if n.endswith("attn2")] if cross_only else names


def resolve_layer(unet: nn.Module, spec: str) -> str:
    """A cross-attention layer from a full name or the short form ``up.B.A`` / ``down.B.A`` / ``mid.A`` (block B,
    transformer A; its first transformer block's ``attn2``)."""
    cross = attention_layers(unet, cross_only=True)
    if not cross:
        raise KakusanError("the model has no cross-attention layer (EmerDiff needs a token-conditioned UNet, "
                           "e.g. one trained with --cond tokens)")
    parts = spec.split(".")
    if parts[0] in ("up", "down") and len(parts) == 3:
        spec = f"{parts[0]}_blocks.{parts[1]}.attentions.{parts[2]}.transformer_blocks.0.attn2"
    elif parts[0] == "mid" and len(parts) == 2:
        spec = f"mid_block.attentions.{parts[1]}.transformer_blocks.0.attn2"
    if spec not in cross:
        raise KakusanError(f"unknown cross-attention layer {spec!r}; this model has: {', '.join(cross)}")
    return spec


@dataclass
class Probe:
    """What the processors do in the next network calls; see the module docstring."""

    query_layer: str | None = None  # record this layer's queries into ``queries``
    queries: torch.Tensor | None = None  # (B, tokens, channels)
    record: bool = False  # record every layer's attention maps into ``maps[call][layer]``
    replay: bool = False  # use ``maps[call][layer]`` instead of computing them (batch broadcast)
    maps: list[dict[str, torch.Tensor]] = field(default_factory=list)
    mod_layer: str | None = None
    mod: torch.Tensor | None = None  # (B, tokens) = c M: added after this layer's output projection
    mod_calls: set[int] | None = None  # modulate only at these network calls (None: at every call)
    scales: list[float] = field(default_factory=list)  # RMS of mod_layer's output per call, while mod is None
    map_dtype: torch.dtype = torch.float16  # recorded attention maps are stored in this dtype
    call: int = 0  # index of the current network call (set by the caller)
    sizes: dict[str, int] = field(default_factory=dict)  # tokens of each layer seen (its spatial size)
    trace: list | None = None  # if a list: (call, layer, attention map used) of every layer call, for inspection


class ProbeProcessor:
    def __init__(self, name: str, probe: Probe):
        self.name, self.probe = name, probe

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        p = self.probe
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, tokens = hidden_states.shape[:2]
        context_length = (encoder_hidden_states if encoder_hidden_states is not None else hidden_states).shape[1]
        attention_mask = attn.prepare_attention_mask(attention_mask, context_length, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if self.name == p.query_layer:
            p.queries = query.detach()
        p.sizes[self.name] = tokens
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        if p.replay:
            probs = p.maps[p.call][self.name].to(value.dtype)  # (heads, tokens, context): the unmodulated run
            heads, context, d = attn.heads, value.shape[1], value.shape[2]
            if probs.shape[0] != heads:
                raise KakusanError("attention maps are replayed from a recorded run of one image")
            folded = value.view(batch, heads, context, d).permute(1, 2, 0, 3).reshape(heads, context, batch * d)
            out = torch.bmm(probs, folded).view(heads, tokens, batch, d).permute(2, 0, 1, 3)
            hidden_states = attn.batch_to_head_dim(out.reshape(batch * heads, tokens, d))
        else:
            key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
            probs = attn.get_attention_scores(attn.head_to_batch_dim(query), key, attention_mask)
            if p.record:
                while len(p.maps) <= p.call:
                    p.maps.append({})
                p.maps[p.call][self.name] = probs.detach().to(p.map_dtype)
            hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        if p.trace is not None:
            p.trace.append((p.call, self.name, probs.detach()))
        hidden_states = attn.to_out[0](hidden_states)
        if self.name == p.mod_layer and p.mod is None:
            p.scales.append(float(hidden_states.detach().float().pow(2).mean().sqrt()))
        elif self.name == p.mod_layer and (p.mod_calls is None or p.call in p.mod_calls):
            hidden_states = hidden_states + p.mod[:, :, None].to(hidden_states.dtype)  # f(sigma(QK^T) V) + c M
        hidden_states = attn.to_out[1](hidden_states)
        if spatial:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def probed(unet: nn.Module, probe: Probe):
    """Within the block every attention layer of ``unet`` runs a :class:`ProbeProcessor` sharing ``probe``; the
    previous processors come back afterwards."""
    before = unet.attn_processors
    unet.set_attn_processor({name: ProbeProcessor(name[: -len(".processor")], probe) for name in before})
    try:
        yield probe
    finally:
        unet.set_attn_processor(before)

"""Networks answer for themselves: the registry, encoder features, token ids or embeddings, the null condition, and
model folders that diffusers alone can open."""
import json
import subprocess
import sys

import pytest
import torch

from kakusan import KakusanError
from kakusan.data import tokens_for_labels
from kakusan.diffusion import Denoiser, generate
from kakusan.diffusion.process import EDMProcess
from kakusan.diffusion.training import drop_condition
from kakusan.nets import MLPConfig, UNetConfig, build_net, net_config_from_dict


def token_net():
    torch.manual_seed(0)
    net = build_net(UNetConfig(preset="xs", image_size=16, cond_type="tokens", vocab_size=12))
    torch.nn.init.normal_(net.token_embedding.weight)
    return net.eval()


def test_configs_round_trip_through_the_registry():
    for config in (UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=3), MLPConfig(width=8)):
        again = net_config_from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config and type(build_net(again)) is type(build_net(config))
    with pytest.raises(KakusanError, match="unknown net kind"):
        net_config_from_dict({"kind": "transformer"})


def test_token_embeddings_are_accepted_as_conditioning_and_equal_the_looked_up_ids():
    net = token_net()
    x, t, ids = torch.randn(2, 1, 16, 16), torch.tensor([3.0, 500.0]), tokens_for_labels(torch.tensor([4, 7]))
    with torch.no_grad():
        by_ids = net(x, t, ids)
        by_embeddings = net(x, t, net.token_embedding(ids))  # what a text encoder would hand over
        other = net(x, t, net.token_embedding(ids) + 1)
    assert torch.equal(by_ids, by_embeddings) and not torch.allclose(by_ids, other)


def test_null_condition_keeps_the_shape_of_the_condition():
    net = token_net()
    ids = torch.ones(3, 5, dtype=torch.long)
    assert net.null_like(ids).shape == (3, 5) and not net.null_like(ids).any()
    emb = torch.randn(3, 5, 64)  # embeddings: the null is the null token's embedding, as in training
    assert torch.equal(net.null_like(emb), net.token_embedding(torch.zeros(3, 5, dtype=torch.long)))
    classes = build_net(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=4))
    assert classes.null_like(None) is None and classes.null_like(torch.tensor([1, 2])).tolist() == [4, 4]
    assert net.null_cond(2).shape == tokens_for_labels(torch.zeros(2, dtype=torch.long)).shape


def test_label_dropout_replaces_the_condition_by_the_null_condition_at_rate_p():
    model = Denoiser.create(UNetConfig(preset="xs", image_size=16, cond_type="class", num_classes=10), EDMProcess())
    labels = torch.arange(20000) % 10
    dropped = drop_condition(model, labels, 0.25, torch.Generator().manual_seed(0))
    null = dropped == 10
    assert abs(float(null.double().mean()) - 0.25) < 0.01
    assert torch.equal(dropped[~null], labels[~null])  # the rest is untouched
    assert drop_condition(model, labels, 0.0, torch.Generator()) is labels
    tokens = drop_condition(Denoiser(token_net(), EDMProcess()), tokens_for_labels(labels), 0.5,
                            torch.Generator().manual_seed(0))
    rows_null = (tokens == 0).all(1)
    assert 0.45 < float(rows_null.double().mean()) < 0.55 and ((tokens != 0).all(1) | rows_null).all()


def test_features_hook_returns_every_stage_and_leaves_the_output_alone():
    net = token_net()
    x, t, ids = torch.randn(2, 1, 16, 16), torch.tensor([3.0, 500.0]), tokens_for_labels(torch.tensor([4, 7]))
    with torch.no_grad():
        feats = net.features(x, t, ids)
        plain = net(x, t, ids)
        again = net(x, t, ids)
    assert list(feats) == ["down.0", "down.1", "down.2", "mid", "up.0", "up.1", "up.2"]
    assert feats["up.2"].shape == (2, 16, 16, 16)
    assert feats["down.0"].shape == (2, 16, 8, 8) and feats["mid"].shape == (2, 32, 4, 4)
    assert torch.equal(plain, again)  # the hooks are gone after the call
    with pytest.raises(KakusanError, match="unknown feature stages"):
        net.features(x, t, ids, names=["up.9"])


def test_the_toy_mlp_is_a_denoiser_that_saves_loads_and_generates(tmp_path):
    model = Denoiser.create(MLPConfig(dim=2, width=8, layers=1), EDMProcess(c_noise_scale=1.0, sigma_max=5.0))
    model.save_pretrained(tmp_path / "toy")
    again = Denoiser.from_pretrained(tmp_path / "toy", ema="raw")
    assert again.image_shape == (2,)
    a = generate(model, range(5), steps=4, progress=False)
    assert a.shape == (5, 2) and torch.equal(a, generate(again, range(5), steps=4, progress=False))


DIFFUSERS_ONLY = """
import json, sys, torch
from diffusers import UNet2DModel
unet = UNet2DModel.from_pretrained(sys.argv[1], subfolder="unet")
x = torch.linspace(-1, 1, 2 * 32 * 32).reshape(2, 1, 32, 32)
with torch.no_grad():
    out = unet(x, torch.tensor([10.0, 300.0]), class_labels=torch.tensor([3, 10])).sample
assert not any(m.startswith("kakusan") for m in sys.modules)
print(json.dumps(out.flatten().tolist()))
"""


@pytest.mark.slow
def test_a_shipped_model_opens_with_diffusers_alone_and_computes_what_kakusan_computes():
    from kakusan.zoo import ZOO_DIR

    r = subprocess.run([sys.executable, "-c", DIFFUSERS_ONLY, str(ZOO_DIR / "mnist-s")], capture_output=True,
                       text=True, check=True)
    theirs = torch.tensor(json.loads(r.stdout.strip().splitlines()[-1])).reshape(2, 1, 32, 32)
    model = Denoiser.from_pretrained("mnist-s")
    x = torch.linspace(-1, 1, 2 * 32 * 32).reshape(2, 1, 32, 32)
    with torch.no_grad():
        ours = model.net(x, torch.tensor([10.0, 300.0]), torch.tensor([3, 10]))
    assert torch.allclose(theirs, ours, atol=1e-6, rtol=0)

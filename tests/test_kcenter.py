"""K-centered patch sampling and its token layout, against brute-force and hand-worked cases."""

import numpy as np
import pytest
import torch

from samplerbench.kernels.farthest import brute_force_farthest
from samplerbench.models.tokens import TokenGrid, coordinates, patchify, sampler_points
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Selection, VideoView
from samplerbench.seeding import generator


def _pixels(t=6, size=32, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (t, 3, size, size), dtype=np.uint8))


def _view(px):
    return VideoView("v", len(px), np.arange(len(px)), allowed=frozenset({"pixels"}), providers={"pixels": lambda: px},
                     frame_size=tuple(px.shape[-2:]))


def _select(name, px, n, seed=0, **params):
    return METHODS.get(name)(**params).select(_view(px), Budget("count", n), generator(seed, "v", name))


def test_patchify_layout_hand_worked():
    px = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    p = patchify(px, 2)  # 2 frames x 2 x 2 patches, 12 values each
    assert p.shape == (8, 12)
    # token 7 = frame 1, row 1, col 1: pixels [2:4, 2:4] of each channel, channel first
    assert p[7].tolist() == px[1, :, 2:4, 2:4].reshape(-1).tolist()
    assert p[1].tolist() == px[0, :, 0:2, 2:4].reshape(-1).tolist()
    grid = TokenGrid.of(px.shape, 2)
    assert (grid.per_frame, grid.total) == (4, 8)
    assert grid.frame_of(np.array([3, 4])).tolist() == [0, 1] and grid.cell_of(np.array([7])).tolist() == [3]
    with pytest.raises(ValueError, match="do not divide"):
        TokenGrid.of((2, 3, 30, 30), 16)


def test_coordinates_span_the_papers_ranges():
    xyz = coordinates(TokenGrid(32, 14, 14))
    assert xyz.shape == (32 * 196, 3)
    assert xyz[:, 0].min() == -4 and xyz[:, 0].max() == 4
    assert xyz[:, 1].abs().max().item() == pytest.approx(2.83) and xyz[0].tolist() == pytest.approx([-4, -2.83, -2.83])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcenter_equals_full_matrix_reference(seed):
    px = _pixels(seed=seed)
    sel = _select("kcenter", px, 2, seed=seed)
    pts, grid = sampler_points(px, 16)
    start = int(generator(seed, "v", "kcenter").integers(grid.total))
    want = brute_force_farthest(pts.double(), 2 * grid.per_frame, start)
    assert sel.order.tolist() == want.tolist()
    assert sel.tokens.tolist() == sorted(want.tolist())
    assert sel.indices.tolist() == sorted(set((want // grid.per_frame).tolist()))  # frames touched
    assert sel.own_flops == (8 - 1) * grid.total * (3 * 16 * 16 + 3)


def test_coordinate_weights_change_what_is_far():
    """With huge coordinate weights the pixels no longer matter: K-center spreads in (t, h, w)."""
    px = _pixels(t=5)
    sel = _select("kcenter", px, 1, w_t=1e4, w_s=1e-4)  # 4 tokens, by time only
    frames = sorted(set((sel.tokens // 4).tolist()))
    assert frames[0] == 0 and frames[-1] == 4  # both ends of the video


def test_hybrid_frames_are_kept_first():
    px = _pixels(t=8)
    sel = _select("kcenter", px, 3, hybrid_frames=2)  # 2 whole frames (centres 2, 6) + 4 K-center tokens
    pts, grid = sampler_points(px, 16)
    forced = [8, 9, 10, 11, 24, 25, 26, 27]
    assert sel.order[:8].tolist() == forced
    assert sel.order.tolist() == brute_force_farthest(pts.double(), 12, forced).tolist()


def test_space_division_keeps_each_cell_equally():
    px = _pixels(t=8)
    sel = _select("kcenter", px, 3, space_division=True)
    grid = TokenGrid.of(px.shape, 16)
    assert len(sel.tokens) == 3 * grid.per_frame
    assert np.bincount(grid.cell_of(sel.tokens), minlength=grid.per_frame).tolist() == [3] * grid.per_frame


def test_uniform_tokens_hand_worked():
    sel = _select("tokens-uniform", _pixels(t=8), 2)  # TSN centres 2 and 6, 4 tokens each
    assert sel.tokens.tolist() == [8, 9, 10, 11, 24, 25, 26, 27] and sel.indices.tolist() == [2, 6]


def test_kcenter_is_seeded_per_video():
    px = _pixels()
    assert _select("kcenter", px, 1, seed=3).digest() == _select("kcenter", px, 1, seed=3).digest()
    starts = {_select("kcenter", px, 1, seed=s).order[0] for s in range(6)}
    assert len(starts) > 1


def test_selection_tokens_must_be_sorted_and_unique():
    with pytest.raises(ValueError, match="tokens must be strictly increasing"):
        Selection(np.array([0]), tokens=np.array([3, 1]))
    a, b = Selection(np.array([0]), tokens=np.array([1, 2])), Selection(np.array([0]), tokens=np.array([1, 3]))
    assert a.digest() != b.digest()


def test_token_vit_trains_on_every_label_of_a_multilabel_video():
    """Multi-label: binary cross-entropy on the multi-hot labels (worked here by hand), not
    cross-entropy on the first label; single-label: cross-entropy."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from samplerbench.models.tokens import video_label_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    ml = SimpleNamespace(multilabel=True, num_classes=3, records=[SimpleNamespace(labels=[0, 2]),
                                                                   SimpleNamespace(labels=[1])])
    want = F.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    assert torch.allclose(video_label_loss(logits, ml, [0, 1]), want)
    sl = SimpleNamespace(multilabel=False, num_classes=3, records=ml.records)
    assert torch.allclose(video_label_loss(logits, sl, [0, 1]), F.cross_entropy(logits, torch.tensor([0, 1])))


@pytest.mark.parametrize("name", ["kcenter", "tokens-uniform"])
def test_token_validation_is_the_model_run_video_by_video(name):
    """The token ViT's validation score (selections and patch features computed once, the ViT
    in batches) is the top-1 of the whole model run on each video's selection alone, averaged
    over the budgets; a multi-label video counts when its top class is one of its labels."""
    from types import SimpleNamespace

    from samplerbench.models.tokens import TokenClassifier, TokenModelConfig, _selected, token_top1

    torch.manual_seed(0)
    pools = torch.stack([_pixels(t=4, size=32, seed=s) for s in range(7)])
    cfg = TokenModelConfig(patch=16, embed="linear", width=16, depth=1, heads=2)
    model = TokenClassifier(cfg, TokenGrid(4, 2, 2), 3).eval()
    records = [SimpleNamespace(video_id=f"v{i}", labels=[i % 3] if i % 2 else [i % 3, (i + 1) % 3]) for i in range(7)]
    split = SimpleNamespace(records=records)
    sampler = METHODS.get(name)(patch=16)
    budgets = (1, 2, 4)
    score = token_top1(sampler, pools, split, budgets, model.video_tokens, batch=3)
    want = []
    with torch.inference_mode():
        for n in budgets:
            hits = []
            for i, rec in enumerate(records):
                tok = _selected(sampler, pools[i], rec.video_id, n, 0)
                logits = model(patchify(pools[i], 16)[tok][None], torch.from_numpy(tok)[None])
                hits.append(int(logits.argmax(1)) in rec.labels)
            want.append(np.mean(hits))
    assert score(model) == pytest.approx(float(np.mean(want)), abs=1e-12)
    assert 0 < np.mean(want) < 1  # the case separates hits from misses


@pytest.mark.parametrize("cap_videos", [10, 1])
def test_the_patch_memo_is_the_selected_patches_encoded_alone(cap_videos):
    """A method's cells read each video's patch features from the memo: bit for bit the frozen
    encoder on the selected patches alone (but for a single patch: about 1e-5 apart), every
    video's patches encoded once for all the method's cells while they fit, only the selected
    ones past the cap; a new method starts a new table."""
    from samplerbench.models.encoders import FrameCNN
    from samplerbench.models.tokens import PatchFeatureMemo, TokenClassifier, TokenModelConfig

    torch.manual_seed(0)
    grid = TokenGrid(6, 2, 2)
    model = TokenClassifier(TokenModelConfig(patch=16, embed="encoder"), grid, 3, FrameCNN().eval())
    videos = {v: _pixels(6, 32, seed=i) for i, v in enumerate(("a", "b", "c"))}
    encoded = []
    inner = model.patch_features
    model.patch_features = lambda p: encoded.append(p.shape[1]) or inner(p)
    per_video = 6 * 4 * FrameCNN().dim * 4  # bytes of one video's patch table
    memo = PatchFeatureMemo(cap_videos * per_video)
    rng = np.random.default_rng(0)
    for k in (1, 4, 9, 24):  # budgets x seeds: every cell asks again
        for v, px in videos.items():
            tok = torch.from_numpy(np.sort(rng.choice(24, k, replace=False)))
            got = memo("kcenter", model, v, lambda px=px: px, tok)
            want = inner(patchify(px, 16)[tok][None])
            if k > 1:
                assert torch.equal(got, want), (k, v)
            else:  # torch's CPU convolution takes another path for a batch of one patch
                assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (k, v)
    if cap_videos == 10:
        assert encoded == [24, 24, 24]  # each video's 24 patches, once
    else:  # the first video kept, the second encoded whole and not kept, then only the selected
        assert encoded == [24, 24, 1, 4, 4, 9, 9, 24, 24] and memo.full
    memo("tokens-uniform", model, "a", lambda: videos["a"], torch.arange(4))
    assert set(memo.table) == {"a"} and memo.method == "tokens-uniform"


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_map_tokens_pool_back_to_the_frame_feature_and_the_memo_reads_them(pool):
    """``embed = "encoder-map"``: a token is the frozen encoder's map pooled over its patch, so
    pooling a frame's tokens again is the frame's feature (what the frame reader reads), bit for
    bit; the memo, past its cap too, gives the same features from the touched frames alone; the
    cost of a selection is the ViT plus the encoder once per touched frame."""
    from samplerbench.models.encoders import FrameCNN
    from samplerbench.models.tokens import (
        PatchFeatureMemo,
        TokenClassifier,
        TokenModelConfig,
        selected_tokens,
    )

    torch.manual_seed(0)
    enc = FrameCNN(pool=pool).eval()
    grid = TokenGrid(6, 4, 4)
    model = TokenClassifier(TokenModelConfig(patch=16, width=16, depth=1, heads=2), grid, 3, enc).eval()
    px = _pixels(6, 64, seed=1)
    toks = model.video_tokens(px).view(6, 16, -1)
    with torch.no_grad():
        frame = enc(enc.normalise(px))
    pooled = toks.amax(1) if pool == "max" else toks.mean(1)
    if pool == "max":
        assert torch.equal(pooled, frame)
    else:
        torch.testing.assert_close(pooled, frame, rtol=1e-5, atol=1e-6)
    tok = torch.tensor([3, 17, 18, 90])  # frames 0, 1 and 5
    full = model.video_tokens(px)[tok]
    assert torch.equal(selected_tokens(model, px, tok), full)
    tight = PatchFeatureMemo(cap_bytes=1)
    assert torch.equal(tight("m", model, "a", lambda: px, tok)[0], full) and tight.full
    assert torch.equal(tight("m", model, "a", lambda: px, tok)[0], full)  # past the cap: the touched frames


def test_an_epochs_selections_made_ahead_in_workers_are_each_steps_own():
    """The token ViT's training makes an epoch's selections before its first step, in worker
    processes, from fit's own visiting order: fit trains step s on exactly
    ``epoch_batches(...)[s]``, and the workers' selection of each video
    at its budget is the one made for that video alone."""
    from types import SimpleNamespace

    from samplerbench.models.tokens import _selected, selections
    from samplerbench.training.fit import FitConfig, default_order_rng, epoch_batches, fit

    cfg = FitConfig(epochs=2, batch=3, seed=5)
    seen = []

    def batch_loss(m, ids, epoch, step, rng):
        seen.append((epoch, step, ids.tolist()))
        return m.weight.sum() * 0.0

    fit(torch.nn.Linear(2, 1), cfg, 8, batch_loss, None, "t", progress=False)
    for epoch in range(2):
        order = default_order_rng(cfg)(epoch).permutation(8)  # the order drawn by hand
        want = [order[s * 3:(s + 1) * 3].tolist() for s in range(3)]
        assert [b.tolist() for b in epoch_batches(cfg, 8, default_order_rng(cfg)(epoch))] == want
        assert [ids for e, _s, ids in seen if e == epoch] == want
    assert seen[0][2] != seen[3][2] or seen[1][2] != seen[4][2]  # the epochs' orders differ

    pools = torch.stack([_pixels(t=4, size=32, seed=s) for s in range(5)])
    split = SimpleNamespace(records=[SimpleNamespace(video_id=f"v{i}") for i in range(5)])
    budgets = np.array([1, 4, 2, 2, 3])
    sampler = METHODS.get("kcenter")(patch=16)
    ahead = selections(sampler, pools, split, budgets, seed=11)
    alone = [_selected(sampler, pools[i], f"v{i}", int(budgets[i]), 11) for i in range(5)]
    assert [a.tolist() for a in ahead] == [a.tolist() for a in alone]
    assert [len(a) for a in ahead] == [4 * int(n) for n in budgets]  # 2x2 tokens a frame


def test_token_vits_of_one_run_share_the_splits_patch_tables(tmp_path, tiny_root, monkeypatch):
    """Two token ViTs on the same frozen encoder and patch size (K-center's and the uniform
    baseline's) compute each split's patch table once between them, and train the weights they
    train alone; a table that does not fit the cap is computed again."""
    from samplerbench.data.candidates import decode_pools
    from samplerbench.data.synth import load_split
    from samplerbench.models import tokens
    from samplerbench.models.encoders import FrameCNN

    train, val = load_split(tiny_root, "train"), load_split(tiny_root, "val")
    torch.manual_seed(0)
    encoder = FrameCNN(width=4, dim=16).eval()
    cfg = tokens.TokenModelConfig(epochs=1, width=16, depth=1, heads=2, batch=8)
    computed = []
    table = tokens.patch_table
    monkeypatch.setattr(tokens, "patch_table", lambda pools, *a: computed.append(len(pools)) or table(pools, *a))

    def train_both(tables, cache):
        return [tokens.train_token_classifier(METHODS.get(name)(), train, val, cfg, 4, (1, 2), (32, 32), cache,
                                              encoder, "enc", progress=False, decode=decode_pools, tables=tables)[0]
                for name in ("kcenter", "tokens-uniform")]

    shared = train_both(tokens.PatchTables(), tmp_path / "shared")
    assert computed == [len(train.records), len(val.records)]  # once each, for both ViTs
    computed.clear()
    alone = train_both(None, tmp_path / "alone")
    assert computed == [len(train.records), len(val.records)] * 2
    for a, b in zip(shared, alone, strict=True):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(v, w), k
    computed.clear()
    train_both(tokens.PatchTables(cap_bytes=1), tmp_path / "tight")
    assert len(computed) == 4

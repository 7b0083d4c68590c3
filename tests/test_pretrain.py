"""The pretraining command end to end, on a budget of seconds: it writes weights the engine loads
and trains through, with the colour vocabulary and per-cell head it was run with."""

import random

import pytest
import torch

from moondream_nb import scenes as sc
from moondream_nb.local import learning as L
from moondream_nb.local import tokenizer as tk
from moondream_nb.local.engine import Engine
from moondream_nb.local.model import VLM, Config, preprocess
from moondream_nb.local.pretrain import aux_loss, aux_targets, cell_colours, example_tokens, lm_loss, main, make_batch
from moondream_nb.local.train import make_optimizer
from moondream_nb.local.weights import read_meta, save_base


def test_extra_colours_are_drawn_and_named_by_the_per_cell_head():
    colours = tuple(sc.PRETRAINING_COLOURS)
    b = make_batch(random.Random(0), 12, 2, 6, shapes=sc.PRETRAINING_SHAPES, colours=colours)
    labels = set(b["aux"][..., 1].flatten().tolist()) - {-100}
    assert any(k >= len(sc.COLOURS) for k in labels) and max(labels) < len(colours)
    scene = sc.make_scene(4, colours=["pink", "cyan"], n_objects=3)
    assert {o.colour for o in scene.objects} <= {"pink", "cyan"}
    _, frame = preprocess(scene.image)
    assert set(aux_targets(scene, frame)[:, 1].tolist()) - {-100} <= {colours.index("pink"), colours.index("cyan")}
    assert "purple" not in colours


def test_chunks_cut_padding_and_leave_the_loss_unchanged():
    torch.manual_seed(0)
    model = VLM(Config(d=64, heads=2, enc_layers=1, dec_layers=2))
    kw = dict(shapes=sc.PRETRAINING_SHAPES, colours=tuple(sc.PRETRAINING_COLOURS))
    small = make_batch(random.Random(2), 10, 4, 6, chunk_tokens=256, **kw)
    whole = make_batch(random.Random(2), 10, 4, 6, chunk_tokens=10**9, **kw)
    assert len(whole["chunks"]) == 1 and len(small["chunks"]) > 2
    assert all(c["tokens"].numel() <= 256 or len(c["tokens"]) == 1 for c in small["chunks"])
    rows = lambda b: sorted((c["tokens"][r][c["targets"][r] != -100].tolist(), int(c["index"][r]))  # noqa: E731
                            for c in b["chunks"] for r in range(len(c["tokens"])))
    assert rows(small) == rows(whole) and len(rows(small)) == 40
    padded = lambda b: sum(c["tokens"].numel() for c in b["chunks"])  # noqa: E731
    assert padded(small) < 0.6 * padded(whole)
    memory = model.encode(small["images"])
    assert torch.allclose(lm_loss(model, small, memory), lm_loss(model, whole, memory), atol=1e-5)


def test_the_cell_rgb_head_learns_each_cells_colour():
    torch.manual_seed(0)
    model = VLM(Config(d=64, heads=2, enc_layers=1, dec_layers=1))
    b = make_batch(random.Random(1), 8, 0, 6, shapes=sc.PRETRAINING_SHAPES, colours=tuple(sc.PRETRAINING_COLOURS))
    target = cell_colours(b["images"])
    assert target.shape == (8, 144, 3) and target.min() >= -1 and target.max() <= 1
    err = lambda: torch.nn.functional.mse_loss(model.cell_heads(model.encoder(b["images"], None))[-1], target).item()  # noqa: E731
    before = err()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        aux_loss(model, model.encoder(b["images"], None), b["aux"], b["images"]).backward()
        opt.step()
    assert err() < 0.3 * before, (before, err())


@pytest.mark.parametrize("skill, per", [("point", 2), ("detect", 4)])
def test_shuffled_answers_teach_every_match_once_with_the_same_grammar(skill, per):
    scene = sc.make_scene(5, include=[("red", "circle")] * 3, n_objects=4)
    _, frame = preprocess(scene.image)
    request, answer = sc.make_task(scene, skill, random.Random(0), target=("red", None))
    tokens, targets, states = example_tokens(frame, request, answer, False)
    reading = [tuple(targets[-1 - per * (k + 1):-1 - per * k]) for k in range(3)]
    orders = set()
    for seed in range(12):
        t2, g2, s2 = example_tokens(frame, request, answer, False, random.Random(seed))
        items = [tuple(g2[-1 - per * (k + 1):-1 - per * k]) for k in range(3)]
        assert sorted(items) == sorted(reading) and g2[-1] == tk.EOS  # the same boxes, the stop last
        assert s2 == states and len(t2) == len(tokens) and g2[: -1 - 3 * per] == targets[: -1 - 3 * per]
        orders.add(tuple(items))
    assert len(orders) >= 4  # 3 matches: 6 orders, not only reading order
    # make_batch shuffles only when asked, and then only some answers: cells out of reading order
    kw = dict(shapes=sc.PRETRAINING_SHAPES, colours=tuple(sc.PRETRAINING_COLOURS))

    def in_reading_order(shuffle_items):
        b = make_batch(random.Random(3), 24, 4, 6, shuffle_items=shuffle_items, **kw)
        answers = [c["targets"][r][c["targets"][r] != -100].tolist() for c in b["chunks"] for r in range(len(c["tokens"]))]
        cells = [[t for t in a if tk.CELL0 <= t < tk.CELL0 + tk.N_CELLS] for a in answers]
        return [c == sorted(c) for c in cells if len(set(c)) >= 2]
    assert all(in_reading_order(0.0))
    mixed = in_reading_order(0.5)
    assert 0 < mixed.count(False) < len(mixed)


@pytest.mark.parametrize("flags", [[], ["--no-listed-bias"], ["--basic-colours", "--no-cell-rgb", "--no-order-bias",
                                                                   "--no-stop-pointer", "--no-list-query", "--no-colour-code"]])
def test_pretrain_writes_weights_the_engine_loads_and_trains(tmp_path, flags):
    out = tmp_path / "base.safetensors"
    main(["--out", str(out), "--minutes", "0.05", "--warmup-minutes", "0.02", "--images", "4", "--tasks", "2",
          "--eval-scenes", "4", "--threads", "1", *flags])
    basic = "--basic-colours" in flags
    colours = tuple(sc.COLOURS if basic else sc.PRETRAINING_COLOURS)
    expect = {"colours": len(colours), "cell_rgb": not basic, "order_bias": not basic, "listed_bias": not flags,
              "stop_pointer": not basic, "list_query": not basic, "listed_mask": not flags,
              "colour_code": not basic}
    meta = read_meta(out)
    assert {k: meta["config"][k] for k in expect} == expect
    assert meta["step"] > 0
    assert set(meta["eval"]) >= {"query_em", "point_reward", "detect_reward"}
    torch.manual_seed(0)
    engine = Engine(str(out))
    assert engine.model.colour_names == colours and {k: getattr(engine.model.cfg, k) for k in expect} == expect
    request, gt = L.KNOWN_DETECT.item(5)
    adapter = engine.new_adapter(8)
    result = engine.train(adapter, make_optimizer(adapter), [{"mode": "sft", "request": request, "target": {"boxes": gt["boxes"]}}], 2e-4)
    assert result.applied and result.sft_loss > 0


def test_weights_written_before_later_config_fields_still_load(tmp_path):
    # Files from before `colours`, `cell_rgb`, `order_bias`, `listed_bias` and `stop_pointer` existed hold none of them.
    model = VLM(Config(d=64, heads=2, enc_layers=1, dec_layers=1, colours=len(sc.COLOURS), cell_rgb=False, order_bias=False,
                       listed_bias=False, stop_pointer=False, list_query=False,
                       listed_mask=False, colour_code=False))
    out = tmp_path / "old.safetensors"
    save_base(model, out, {"config": {"d": 64, "heads": 2, "enc_layers": 1, "dec_layers": 1, "mlp": 4, "max_len": 320}, "step": 1})
    engine = Engine(str(out))
    assert engine.model.cfg == model.cfg and engine.model.colour_names == tuple(sc.COLOURS)
    # The reading-order weights shipped before `listed_bias`: order biases, read as before / at / after.
    model = VLM(Config(d=64, heads=2, enc_layers=1, dec_layers=1, listed_bias=False, stop_pointer=False, list_query=False,
                       listed_mask=False, colour_code=False))
    save_base(model, out, {"config": {"d": 64, "heads": 2, "enc_layers": 1, "dec_layers": 1, "mlp": 4, "max_len": 320,
                                      "colours": len(sc.PRETRAINING_COLOURS), "cell_rgb": True, "order_bias": True}, "step": 1})
    assert Engine(str(out)).model.cfg == model.cfg
    # The listed-cell weights shipped before `stop_pointer`: the vocabulary head ends their lists.
    model = VLM(Config(d=64, heads=2, enc_layers=1, dec_layers=1, stop_pointer=False, list_query=False, listed_mask=False,
                       colour_code=False))
    save_base(model, out, {"config": {"d": 64, "heads": 2, "enc_layers": 1, "dec_layers": 1, "mlp": 4, "max_len": 320,
                                      "colours": len(sc.PRETRAINING_COLOURS), "cell_rgb": True, "order_bias": True,
                                      "listed_bias": True}, "step": 1})
    assert Engine(str(out)).model.cfg == model.cfg

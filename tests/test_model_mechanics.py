"""Mechanics of the built-in model on a small random-init config: tokenizer, sampler, LoRA, train step."""

import random

import pytest
import torch

from moondream_nb import scenes as sc
from moondream_nb.local import tokenizer as tk
from moondream_nb.local.model import VLM, Adapter, Config, colour_code, preprocess
from moondream_nb.local.sampler import Row, generate
from moondream_nb.local.train import (ANCHORS_PER_IMAGE, Example, RLGroup, anchors, load_state_tensors, make_optimizer,
                                      retention_kl, state_tensors, train_step)
from moondream_nb.rewards import detect_reward, point_reward

SMALL = Config(d=64, heads=2, enc_layers=1, dec_layers=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VLM(SMALL).eval()


@pytest.fixture(scope="module")
def scene():
    return sc.make_scene(11, size=(300, 200), n_objects=4)


def test_output_token_round_trip_is_deterministic_and_precise():
    rng = random.Random(0)
    for seed in range(100):
        s = sc.make_scene(seed)
        frame = tk.Frame.of(*s.image.size)
        _, pts = sc.make_task(s, "point", rng)
        toks = tk.answer_tokens(frame, "point", pts)
        out = tk.decode(frame, "point", toks)
        assert point_reward(out["points"], pts) == 1.0
        assert tk.answer_tokens(frame, "point", out) == toks  # re-deriving tokens from an output is stable
        _, boxes = sc.make_task(s, "detect", rng)
        toks = tk.answer_tokens(frame, "detect", {"objects": boxes["boxes"]})
        out = tk.decode(frame, "detect", toks)
        assert detect_reward(out["objects"], boxes) > 0.85
        assert tk.answer_tokens(frame, "detect", out) == toks


def test_query_tokens_carry_reasoning_and_separator():
    frame = tk.Frame.of(100, 100)
    toks = tk.answer_tokens(frame, "query", {"answer": "red", "reasoning": {"text": "It is red."}}, reasoning=True)
    assert toks[0] == tk.THINK and tk.ANSWER in toks and toks[-1] == tk.EOS
    out = tk.decode(frame, "query", toks, reasoning=True)
    assert out["answer"] == "red" and out["reasoning"]["text"] == "It is red."
    states = tk.states_for("query", toks, reasoning=True)
    assert states[0] == tk.S_FORCED_THINK and states[-1] == tk.S_TEXT


def test_letterbox_frame_matches_preprocess():
    img = sc.make_scene(3, size=(320, 180)).image
    x, frame = preprocess(img)
    assert x.shape == (3, tk.RES, tk.RES) and frame == tk.Frame.of(320, 180)
    assert frame.to_image(*frame.to_model(0.25, 0.75)) == pytest.approx((0.25, 0.75))
    # the padding rows above the content are grey
    assert torch.allclose(x[:, 0, :], torch.full_like(x[:, 0, :], 127 / 127.5 - 1), atol=1e-6)


def test_cached_greedy_decoding_matches_teacher_forcing(model, scene):
    x, frame = preprocess(scene.image)
    mem = model.encode(x[None])
    for skill, req in (("query", {"skill": "query", "question": "What colour is the circle?"}),
                       ("detect", {"skill": "detect", "object": "red things"})):
        row = Row(0, tk.prompt_tokens(frame, req), skill, temperature=0.0, max_tokens=12, max_objects=3)
        sample = generate(model, mem, [row])[0]
        seq = row.prompt + sample.tokens
        with torch.no_grad():
            logits = model(x[None], torch.tensor([seq]), torch.tensor([0]))
        states = tk.states_for(skill, sample.tokens)
        p = len(row.prompt) - 1
        argmax = [int(model.masked(logits[0, p + k], torch.tensor(states[k])).argmax()) for k in range(len(sample.tokens))]
        assert argmax == sample.tokens


def _greedy_cells_with_biases(scene, listed_bias: bool, ptr_bias: list[float], max_objects: int, listed_mask: bool = False):
    """Greedy cached decoding of "point at the circles" with strong order biases → (model, listed cells), after
    checking that it equals teacher forcing and that gradients reach the biases."""
    torch.manual_seed(0)
    model = VLM(Config(d=64, heads=2, enc_layers=1, dec_layers=2, order_bias=True, listed_bias=listed_bias,
                       listed_mask=listed_mask)).eval()
    with torch.no_grad():
        model.cross_order.normal_(0, 2.0)
        model.ptr_order.copy_(torch.tensor(ptr_bias))
    x, frame = preprocess(scene.image)
    mem = model.encode(x[None])
    row = Row(0, tk.prompt_tokens(frame, {"skill": "point", "object": "circles"}), "point", temperature=0.0,
              max_objects=max_objects)
    tokens = generate(model, mem, [row, row])[0].tokens
    seq = torch.tensor([row.prompt + tokens])
    logits = model(x[None], seq, torch.tensor([0]))
    states = tk.states_for("point", tokens)
    p = len(row.prompt) - 1
    assert [int(model.masked(logits[0, p + k], torch.tensor(states[k])).argmax()) for k in range(len(tokens))] == tokens
    logits[0, p:].logsumexp(-1).sum().backward()
    assert model.cross_order.grad.abs().sum() > 0 and model.ptr_order.grad.abs().sum() > 0
    return model, tokens[:-1:2] if tokens[-1] == tk.EOS else tokens[::2]


def test_order_bias_follows_the_last_listed_cell_in_cached_and_teacher_forced_decoding(scene):
    # Strongly prefer cells after the last one listed.
    _, cells = _greedy_cells_with_biases(scene, False, [-4.0, 0.0, 2.0], max_objects=5)
    assert len(cells) >= 3 and cells == sorted(cells)


def test_listed_bias_marks_listed_cells_in_cached_and_teacher_forced_decoding(scene):
    # A listed cell is never pointed at again.
    model, cells = _greedy_cells_with_biases(scene, True, [-30.0, 0.0, 1.0], max_objects=6)
    assert len(cells) >= 3 and len(set(cells)) == len(cells)  # greedy repeats its best cell unless the cache marks it
    # Categories: 0 listed, 1 next to a listed cell, 2 neither; a non-cell token keeps what was listed.
    order = model.order(torch.tensor([[tk.CELL0 + 13, 5, tk.CELL0 + 100]]), None)[0].argmax(-1)
    assert order[0, 13] == 0 and order[0, 14] == order[0, 0] == 1 and order[0, 100] == 2
    assert order[1, 13] == 0 and order[1, 100] == 2
    assert order[2, 100] == order[2, 13] == 0 and order[2, 101] == order[2, 88] == 1 and order[2, 50] == 2


def test_listed_mask_shuts_listed_cells_except_a_target_that_lists_one_twice(scene):
    # A pointer bias that favours the listed cells cannot make greedy decoding select one again.
    model, cells = _greedy_cells_with_biases(scene, True, [30.0, 0.0, 1.0], max_objects=6, listed_mask=True)
    assert len(cells) >= 3 and len(set(cells)) == len(cells)
    # Teacher-forced (train steps, pretraining), a target with two things centred in one cell keeps that cell
    # open where it comes again, so its loss stays finite; every other listed cell stays shut.
    x, frame = preprocess(scene.image)
    prompt = tk.prompt_tokens(frame, {"skill": "point", "object": "circles"})
    answer = [tk.CELL0 + 13, tk.OFF0, tk.CELL0 + 40, tk.OFF0, tk.CELL0 + 13, tk.OFF0, tk.EOS]
    with torch.no_grad():
        logits = model(x[None], torch.tensor([prompt + answer]), torch.tensor([0]))[0, len(prompt) - 1:]
    ptr = logits[:, tk.CELL0:tk.OFF0]
    assert ptr[4, 13] > -1e3 and ptr[4, 40] < -1e8  # before the second 13: 13 open, 40 shut
    assert ptr[2, 13] < -1e8 and ptr[6, 13] < -1e8 and ptr[6, 40] < -1e8  # elsewhere both shut once listed
    assert ptr[0].max() > -1e3 and (ptr[0] > -1e3).all()


def test_stop_pointer_ends_lists_by_one_threshold_the_cells_score_against(scene):
    torch.manual_seed(0)
    model = VLM(SMALL).eval()
    x, frame = preprocess(scene.image)
    mem = model.encode(x[None])
    point = Row(0, tk.prompt_tokens(frame, {"skill": "point", "object": "circles"}), "point", temperature=0.0, max_objects=4)
    query = Row(0, tk.prompt_tokens(frame, {"skill": "query", "question": "How many circles?"}), "query", temperature=0.0,
                max_tokens=6)
    with torch.no_grad():
        model.ptr_stop.fill_(50.0)  # above every cell: the list ends before its first item
    high = generate(model, mem, [point, query])
    with torch.no_grad():
        model.ptr_stop.fill_(-50.0)  # below every cell: the list runs to max_objects
    low = generate(model, mem, [point, query])
    assert high[0].tokens == [tk.EOS] and high[0].finish_reason == "stop"
    assert len(low[0].tokens) == 8 and tk.EOS not in low[0].tokens
    assert high[1].tokens == low[1].tokens  # text answers end by the vocabulary head, not the threshold
    # Training reaches the threshold only through the states between list items.
    states = torch.tensor([tk.S_ITEM, tk.S_OFF, tk.S_ITEM, tk.S_TEXT])
    logits = torch.randn(4, tk.VOCAB)
    masked = model.masked(logits, states)
    assert masked[[0, 2], tk.EOS].tolist() == [-50.0, -50.0] and masked[3, tk.EOS] == logits[3, tk.EOS]
    assert masked[1, tk.EOS] < -1e8 and torch.equal(masked[0, tk.CELL0:tk.OFF0], logits[0, tk.CELL0:tk.OFF0])
    torch.log_softmax(masked, -1)[[0, 2], tk.EOS].sum().backward()
    assert model.ptr_stop.grad is not None and model.ptr_stop.grad != 0


def test_sampling_respects_grammar_budgets_and_seed(model, scene):
    x, frame = preprocess(scene.image)
    mem = model.encode(x[None])
    rows = [Row(0, tk.prompt_tokens(frame, {"skill": "detect", "object": "circle"}), "detect", max_objects=2)] * 8
    a = generate(model, mem, rows, generator=torch.Generator().manual_seed(3))
    b = generate(model, mem, rows, generator=torch.Generator().manual_seed(3))
    assert [s.tokens for s in a] == [s.tokens for s in b]
    for s in a:
        body = [t for t in s.tokens if t != tk.EOS]
        assert len(body) % 4 == 0 and len(body) <= 8
        for k in range(0, len(body), 4):
            assert tk.CELL0 <= body[k] < tk.OFF0 <= body[k + 1] < tk.SIZE0 <= body[k + 2] and body[k + 3] >= tk.SIZE0
        assert s.finish_reason == ("stop" if s.tokens[-1] == tk.EOS else "length")
    text = generate(model, mem, [Row(0, tk.prompt_tokens(frame, {"skill": "query", "question": "Q?"}), "query", max_tokens=5)])
    assert len(text[0].tokens) <= 5


def _examples(scene):
    x, frame = preprocess(scene.image)
    req = {"skill": "point", "object": "circle"}
    good = {"points": [o.point for o in scene.objects[:1]]}
    bad = {"points": [{"x": 0.05, "y": 0.95}]}
    return x[None], frame, req, good, bad


def test_fresh_adapter_changes_nothing_and_rl_moves_towards_reward(model, scene):
    images, frame, req, good, bad = _examples(scene)
    adapter = Adapter(model, 8)
    ex_good, ex_bad = Example(0, frame, req, good), Example(0, frame, req, bad)
    toks = torch.tensor([tk.prompt_tokens(frame, req) + tk.answer_tokens(frame, "point", good)])
    with torch.no_grad():
        assert torch.equal(model(images, toks, torch.tensor([0])), model(images, toks, torch.tensor([0]), adapter))
    opt = make_optimizer(adapter)
    flat = train_step(model, adapter, opt, images, [RLGroup([ex_good, ex_bad], [0.5, 0.5])], [], lr=1e-2)
    assert not flat.applied and flat.reward_mean == 0.5
    assert all(torch.count_nonzero(b) == 0 for _, b in adapter.params.values())
    from moondream_nb.local.train import _batch, token_logprobs

    def margin():
        with torch.no_grad():
            lp = token_logprobs(model, adapter, images, _batch([ex_good, ex_bad])).sum(1)
        return float(lp[0] - lp[1])

    before = margin()
    for _ in range(5):
        r = train_step(model, adapter, opt, images, [RLGroup([ex_good, ex_bad], [1.0, 0.0])], [], lr=1e-2)
        assert r.applied and r.kl is not None and r.kl >= 0 and r.grad_norm > 0
        assert r.reward_mean == 0.5 and r.reward_std == 0.5 and r.sft_loss is None
    assert margin() > before + 1.0


def test_sft_lowers_loss_and_state_round_trips(model, scene):
    images, frame, req, good, _ = _examples(scene)
    adapter = Adapter(model, 16)
    opt = make_optimizer(adapter)
    losses = [train_step(model, adapter, opt, images, [], [Example(0, frame, req, good)], lr=1e-2).sft_loss for _ in range(6)]
    assert losses[-1] < losses[0] * 0.7
    saved = state_tensors(adapter, opt)
    clone = Adapter(model, 16, seed=99)
    opt2 = make_optimizer(clone)
    load_state_tensors(clone, opt2, saved)
    r1 = train_step(model, adapter, opt, images, [], [Example(0, frame, req, good)], lr=1e-2)
    r2 = train_step(model, clone, opt2, images, [], [Example(0, frame, req, good)], lr=1e-2)
    assert r1.sft_loss == pytest.approx(r2.sft_loss, rel=1e-5)
    for name in adapter.params:
        assert torch.allclose(adapter.params[name][1], clone.params[name][1], atol=1e-6)


def test_retention_anchors_ask_about_known_concepts_the_step_does_not(model, scene):
    images, frame, req, good, _ = _examples(scene)
    asked = [Example(0, frame, {"skill": "detect", "object": "red squares"}, {"objects": []}),
             Example(0, frame, req, good)]  # point at the circle
    with torch.no_grad():
        base = model.encode(images, None)
    got = anchors(model, base, asked)
    assert len(got) == ANCHORS_PER_IMAGE  # per distinct image
    for a in got:
        words = set(a.request["object"].split())
        assert a.request["skill"] in ("point", "detect")
        assert not words & {"red", "square", "squares", "circle", "circles"}, a.request
        assert words & (set(sc.PRETRAINING_SHAPES) | {sc.plural(s) for s in sc.PRETRAINING_SHAPES} | set(model.colour_names))
    assert [a.request for a in anchors(model, base, asked)] == [a.request for a in got]  # a replay trains the same
    # Anchors are the base's own answers: a fresh adapter is at zero retention KL, a trained one is not.
    adapter = Adapter(model, 8)
    fresh = retention_kl(model, adapter, images, got, model.encode(images, adapter), base)
    assert fresh.item() == pytest.approx(0.0, abs=1e-6)
    opt = make_optimizer(adapter)
    steps = [train_step(model, adapter, opt, images, [], [Example(0, frame, req, good)], lr=1e-2) for _ in range(3)]
    assert steps[0].extra["retain_kl"] == pytest.approx(0.0, abs=1e-6) and steps[-1].extra["retain_kl"] > 0
    off = train_step(model, adapter, opt, images, [], [Example(0, frame, req, good)], lr=1e-2, retain_coef=0.0)
    assert "retain_kl" not in off.extra


def _unit_code(rgb) -> torch.Tensor:
    """The colour code of an image of one colour, unit length."""
    image = torch.tensor(rgb, dtype=torch.float32).div(127.5).sub(1.0).view(1, 3, 1, 1).expand(1, 3, tk.RES, tk.RES)
    c = colour_code(image)[0, 0]
    return c / c.norm()


def test_colour_code_keeps_the_held_out_colour_apart_from_every_pretraining_colour():
    # The pointer's fixed colour code is what lets an adapter select purple cells without blue or white ones.
    purple = _unit_code(sc.HELD_OUT_COLOURS["purple"])
    for name, rgb in sc.PRETRAINING_COLOURS.items():
        assert float(purple @ _unit_code(rgb)) < 0.3, name
    assert float(purple @ _unit_code((160, 55, 190))) > 0.9  # a slightly different purple still reads as purple


def test_pointer_query_on_the_colour_code_selects_cells_of_that_colour_and_adapters_reach_it():
    torch.manual_seed(0)
    model = VLM(SMALL).eval()
    scene = sc.make_scene(5, include=[("purple", "square")], colours=list(sc.ALL_COLOURS), n_objects=3, size=(240, 240))
    boxes = [o.box for o in scene.objects if o.colour == "purple"]
    x, frame = preprocess(scene.image)
    tokens = torch.tensor([tk.prompt_tokens(frame, {"skill": "point", "object": "thing"})])

    def first_cell(ad=None) -> int:
        logits = model(x[None], tokens, torch.tensor([0]), ad)[0, -1, tk.CELL0:tk.CELL0 + tk.N_CELLS]
        return int(logits.argmax())

    with torch.no_grad():
        model.ptr_code.bias.copy_(40.0 * _unit_code(sc.HELD_OUT_COLOURS["purple"]))  # a query that asks for purple in the code
        cell = first_cell()
    cx = ((cell % tk.GRID + 0.5) * tk.RES / tk.GRID - frame.ox) / frame.sw
    cy = ((cell // tk.GRID + 0.5) * tk.RES / tk.GRID - frame.oy) / frame.sh
    assert any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes), (cell, boxes)
    with torch.no_grad():
        model.ptr_code.bias.zero_()
        assert first_cell() != cell  # without the code's query the random pointer picks elsewhere
    # An adapter learns the same query through the LoRA on ptr_code: its gradient arrives there.
    ad = Adapter(model, 8)
    logits = model(x[None], tokens, torch.tensor([0]), ad)[0, -1]
    torch.log_softmax(logits, -1)[tk.CELL0 + cell].backward()
    assert ad.params["ptr_code"][1].grad.abs().sum() > 0


def test_a_step_in_chunks_is_the_step_in_one_batch(model, monkeypatch):
    """Micro-batches bound a step's memory; their gradients add up to the one-batch gradient."""
    import moondream_nb.local.train as T

    scenes = [sc.make_scene(40 + i, size=(200, 150), n_objects=4) for i in range(3)]
    prepped = [preprocess(s.image) for s in scenes]
    images = torch.stack([x for x, _ in prepped])
    rng = random.Random(5)
    rl, sft = [], []
    for i, (s, (_, frame)) in enumerate(zip(scenes, prepped)):
        req, gt = sc.make_task(s, "point", rng)
        outs = [{"points": [{"x": rng.random(), "y": rng.random()} for _ in range(k % 4)]} for k in range(6)]
        rl.append(RLGroup([Example(i, frame, req, o) for o in outs], [rng.random() for _ in outs]))
        req, boxes = sc.make_task(s, "detect", rng)
        sft.append(Example(i, frame, req, {"objects": boxes["boxes"]}))

    def step(budget):
        monkeypatch.setattr(T, "TOKENS_PER_CHUNK", budget)
        torch.manual_seed(1)
        adapter = Adapter(model, rank=8)
        for _, b in adapter.params.values():
            torch.nn.init.normal_(b, std=0.02)  # a trained adapter: the LoRA path carries gradient both ways
        result = train_step(model, adapter, make_optimizer(adapter), images, rl, sft, lr=1e-3)
        return result, {name: (a.grad.clone(), b.grad.clone()) for name, (a, b) in adapter.params.items()}

    whole, g_whole = step(10**9)
    parts, g_parts = step(1)  # every example alone
    assert len(list(T.chunks(sft, budget=1))) == len(sft) and len(list(T.chunks(sft, budget=10**9))) == 1
    for key in ("kl", "sft_loss", "grad_norm"):
        assert getattr(parts, key) == pytest.approx(getattr(whole, key), rel=1e-4, abs=1e-7)
    assert parts.extra["retain_kl"] == pytest.approx(whole.extra["retain_kl"], rel=1e-4, abs=1e-7)
    for name, (ga, gb) in g_whole.items():
        assert torch.allclose(g_parts[name][0], ga, rtol=1e-3, atol=1e-6), name
        assert torch.allclose(g_parts[name][1], gb, rtol=1e-3, atol=1e-6), name

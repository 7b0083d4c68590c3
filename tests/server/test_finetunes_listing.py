"""Listing finetunes (issue 24): ``md.finetunes`` pages as the HTTP API does, ``Finetunes`` walks
every page, finds one by name after a restart and makes a frame of them; each key sees its own."""

from __future__ import annotations

import pytest

import moondream_nb as md

from .conftest import OTHER_KEY, item
from moondream_nb import connect


def test_pages_every_finetune_and_keys_stay_apart(server):
    mine = [connect(server=server).ft(name=f"listed-{i:02d}", rank=8).finetune_id for i in range(23)]
    theirs = [md.ft(OTHER_KEY, name=f"theirs-{i}", rank=8, endpoint=server.endpoint).finetune_id for i in range(2)]
    first = md.finetunes(server.api_key, endpoint=server.endpoint, limit=10)
    assert len(first["finetunes"]) == 10 and first["has_more"] is True and first["next_cursor"]
    seen, cursor = [f["finetune_id"] for f in first["finetunes"]], first["next_cursor"]
    while cursor:
        page = md.finetunes(server.api_key, endpoint=server.endpoint, limit=10, cursor=cursor)
        seen += [f["finetune_id"] for f in page["finetunes"]]
        cursor = page["next_cursor"] if page["has_more"] else None
    assert set(mine) <= set(seen) and not set(theirs) & set(seen)  # isolation: another key's are not listed
    assert len(seen) == len(set(seen))  # no finetune twice across pages
    every = list(md.Finetunes(server.api_key, endpoint=server.endpoint))
    assert [f["finetune_id"] for f in every] == seen  # oldest first, the same order
    assert [f["finetune_id"] for f in md.Finetunes(OTHER_KEY, endpoint=server.endpoint)] == theirs


def test_pick_a_finetune_up_by_name_and_see_them_in_a_frame(server):
    ft = connect(server=server).ft(name="come-back-to-me", rank=16)
    request, gt = item(5)
    group = {"mode": "sft", "request": request, "target": {"points": gt["points"]} if "points" in gt else gt}
    ft.train_step([group])
    ft.save_checkpoint()
    listing = md.Finetunes(server.api_key, endpoint=server.endpoint)
    found = listing.named("come-back-to-me")
    assert found["finetune_id"] == ft.finetune_id and found["rank"] == 16
    again = connect(server=server).ft(finetune_id=found["finetune_id"])  # after a restart: by name, then by id
    assert again.step == 1
    frame = listing.frame()
    row = frame.loc["come-back-to-me"]
    assert row["finetune_id"] == ft.finetune_id and row["rank"] == 16 and row["step"] == 1
    assert row["checkpoints"] == 1 and row["last_checkpoint"] == 1
    assert str(frame["created"].dt.tz) == "UTC"
    assert listing.named("no-such-finetune") is None


def test_bad_paging_fails_before_sending(server):
    with pytest.raises(md.ValidationError, match="limit"):
        md.finetunes(server.api_key, endpoint=server.endpoint, limit=0)
    with pytest.raises(md.ValidationError, match="limit"):
        md.finetunes(server.api_key, endpoint=server.endpoint, limit=101)

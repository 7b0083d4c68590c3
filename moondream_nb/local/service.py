"""What the local server does for each tuning and inference request, free of HTTP.

Every method takes the caller's *owner* (a hash of its API key) and the parsed wire body, checks
it with :mod:`moondream_nb.protocol`, and returns the wire response or raises :class:`Problem`
(or ``ValidationError``, a 400). Methods block (torch, SQLite); the HTTP layer runs them in
worker threads.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from .. import protocol
from ..errors import STATUS_ERRORS, ValidationError
from ..rewards import reward
from .engine import Engine, ImageError, StepInput
from .finetunes import Live, Registry
from .model import Adapter
from .store import Finetune, Idem, Store

BASE_MODEL = "moondream3-preview"
DEFAULT_LR = 2e-4
DEFAULT_PAGE = 20
_MODEL_ID = re.compile(r"^[^/]+/(?P<finetune_id>[^/@]+)@(?P<step>\d{1,16})$")


class Problem(Exception):
    """A request that cannot be served: HTTP ``status`` with the protocol's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        known = STATUS_ERRORS.get(status)
        self.type = known[1] if known else "error"
        self.code = code or (known[2] if known else "error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@contextmanager
def image_problems() -> Iterator[None]:
    """An image the engine cannot use becomes the 400 (413 when too large) naming its field."""
    try:
        yield
    except ImageError as exc:
        raise Problem(413 if exc.too_large else 400, str(exc), exc.param) from None


def not_found(what: str, param: str | None = None) -> Problem:
    return Problem(404, what, param)


def finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def request_id(kind: str) -> str:
    return time.strftime(f"%Y-%m-%d_{kind}_%Y-%m-%d-%H:%M:%S-", time.gmtime()) + secrets.token_hex(3)


def parse_page(query: dict[str, str]) -> tuple[int, str | None]:
    """``limit`` (1-100, default 20) and ``cursor`` from a query string."""
    raw = query.get("limit")
    limit: Any = DEFAULT_PAGE
    if raw is not None:
        limit = int(raw) if re.fullmatch(r"\d{1,4}", raw) else raw
    protocol.validate_page(limit, query.get("cursor"))
    return limit, query.get("cursor")


def parse_step(text: str) -> int:
    step = int(text) if re.fullmatch(r"\d{1,16}", text) else text
    return protocol.validate_step(step)


class Service:
    """Tuning and inference over one engine, store and adapter registry."""

    def __init__(self, engine: Engine, store: Store, registry: Registry):
        self.engine = engine
        self.store = store
        self.registry = registry

    # --- helpers ------------------------------------------------------------------------

    def finetune(self, owner: str, finetune_id: Any, param: str | None = "finetune_id") -> Finetune:
        ft = self.store.finetune(owner, finetune_id)
        if ft is None:
            raise not_found(f"finetune {str(finetune_id)[:64]!r} not found (unknown, deleted, or created with "
                            "another API key)", param)
        return ft

    def prepare(self, request: Mapping[str, Any], path: str) -> None:
        """Decode the request's image now, so a bad one is a 400/413 naming its field."""
        with image_problems():
            self.engine.prepare_at(request, path)

    def _state(self, owner: str, finetune_id: str, live: Live):
        """The finetune (re-read under its lock: it may have been deleted meanwhile) and its state."""
        ft = self.finetune(owner, finetune_id)
        return ft, self.registry.state(live, ft)

    # --- finetunes ----------------------------------------------------------------------

    def create_finetune(self, owner: str, body: Any, idem: Idem | None) -> dict:
        protocol.check_dict(body, "body")
        protocol.validate_finetune_create(body.get("name"), body.get("rank"))
        if (hit := self.store.idem_get(idem)) is not None:
            return hit
        response, clash = self.store.create_finetune(owner, body["name"], body["rank"], idem)
        if clash is not None:
            raise Problem(409, f"rank: finetune {clash.name!r} already exists with rank {clash.rank}; "
                               "use that rank or another name", "rank")
        return response

    def get_finetune(self, owner: str, finetune_id: str) -> dict:
        return {"finetune": self.finetune(owner, finetune_id, None).info()}

    def list_finetunes(self, owner: str, query: dict[str, str]) -> dict:
        return self.store.list_finetunes(owner, *parse_page(query))

    def delete_finetune(self, owner: str, finetune_id: str) -> dict:
        ft = self.finetune(owner, finetune_id, None)
        live = self.registry.live(ft.finetune_id)
        with live.lock.write():
            self.finetune(owner, finetune_id, None)
            response = self.store.delete_finetune(ft.finetune_id)
            self.registry.drop(ft.finetune_id)
        return response

    # --- rollouts and train steps -------------------------------------------------------

    def rollouts(self, owner: str, body: Any) -> dict:
        view = protocol.validate_rollouts_body(body)
        ft = self.finetune(owner, view.finetune_id)
        request = view.request
        self.engine.check_fits(request, "request")
        self.prepare(request, "request")
        live = self.registry.live(ft.finetune_id)
        with live.lock.read():
            _, state = self._state(owner, ft.finetune_id, live)
            # Step 0 is the base model (LoRA B starts at zero): skip the adapter's arithmetic.
            rollouts = self.engine.sample(request, view.num_rollouts, state.adapter if state.step else None)
        rewards = None
        if view.ground_truth is not None:
            rewards = [reward(view.skill, r["output"], view.ground_truth) for r in rollouts]
        return {"request": request, "rollouts": rollouts, "rewards": rewards}

    def train_step(self, owner: str, body: Any, idem: Idem | None) -> dict:
        view = protocol.validate_train_step_body(body)
        if (hit := self.store.idem_get(idem)) is not None:
            return hit
        ft = self.finetune(owner, view.finetune_id)
        with image_problems():
            step = self.engine.step_input(view.groups)
        lr = float(view.lr if view.lr is not None else DEFAULT_LR)
        live = self.registry.live(ft.finetune_id)
        with live.lock.write():
            if (hit := self.store.idem_get(idem)) is not None:  # a twin finished while we waited
                return hit
            ft, state = self._state(owner, ft.finetune_id, live)
            try:
                return self._apply(ft, live, state, view, step, lr, idem)
            except FloatingPointError:
                self.registry.forget(live)
                raise Problem(400, "lr: the step produced a non-finite gradient and was not applied; "
                                   "use a smaller lr", "lr") from None
            except BaseException:
                self.registry.forget(live)  # memory may be ahead of disk: reload the committed step
                raise

    def _apply(self, ft: Finetune, live: Live, state, view: protocol.TrainStepView, step_input: StepInput, lr: float,
               idem: Idem | None) -> dict:
        result = self.engine.train_on(state.adapter, state.optimizer, step_input, lr)
        step = state.step + 1 if result.applied else state.step
        response = {"step": step, "applied": result.applied, "kl": finite(result.kl), "router_kl": None,
                    "grad_norm": finite(result.grad_norm), "reward_mean": finite(result.reward_mean),
                    "reward_std": finite(result.reward_std), "sft_loss": finite(result.sft_loss)}
        if not result.applied:
            return self.store.idem_put(idem, response)
        rl = sum(g.mode == "rl" for g in view.groups)
        self.registry.write_step(ft.finetune_id, state, step)  # weights first, then the row
        self.store.commit_step(ft.finetune_id, step, lr, rl, len(view.groups) - rl, response, response, idem)
        state.step = step
        self.registry.prune(ft.finetune_id, step)
        return response

    # --- metrics and history ------------------------------------------------------------

    def log_metrics(self, owner: str, finetune_id: str, body: Any, idem: Idem | None) -> dict:
        protocol.validate_metrics_body(body)
        if (hit := self.store.idem_get(idem)) is not None:
            return hit
        ft = self.finetune(owner, finetune_id, None)
        return self.store.log_metrics(ft.finetune_id, body["step"], body["metrics"], idem)

    def list_metrics(self, owner: str, finetune_id: str, query: dict[str, str]) -> dict:
        ft = self.finetune(owner, finetune_id, None)
        return self.store.list_metrics(ft.finetune_id, *parse_page(query))

    def list_steps(self, owner: str, finetune_id: str, query: dict[str, str]) -> dict:
        ft = self.finetune(owner, finetune_id, None)
        return self.store.list_steps(ft.finetune_id, *parse_page(query))

    # --- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self, owner: str, finetune_id: str, idem: Idem | None) -> dict:
        if (hit := self.store.idem_get(idem)) is not None:
            return hit
        ft = self.finetune(owner, finetune_id, None)
        live = self.registry.live(ft.finetune_id)
        with live.lock.write():
            ft = self.finetune(owner, finetune_id, None)
            if ft.step == 0:
                raise not_found("no checkpoint yet: a finetune has one after its first applied train step")
            return self.store.save_checkpoint(ft.finetune_id, ft.step, idem)

    def list_checkpoints(self, owner: str, finetune_id: str, query: dict[str, str]) -> dict:
        ft = self.finetune(owner, finetune_id, None)
        return self.store.list_checkpoints(ft.finetune_id, *parse_page(query))

    def delete_checkpoint(self, owner: str, finetune_id: str, step_text: str) -> dict:
        ft = self.finetune(owner, finetune_id, None)
        step = parse_step(step_text)
        live = self.registry.live(ft.finetune_id)
        with live.lock.write():
            ft = self.finetune(owner, finetune_id, None)
            state = self.store.checkpoint_state(ft.finetune_id, step)
            if state is None:
                raise not_found(f"step: no checkpoint was saved at step {step}", "step")
            if state == "saved":
                self.store.delete_checkpoint(ft.finetune_id, step)
                self.registry.drop_checkpoint(ft.finetune_id, step, ft.step)
        return {"ok": True}

    # --- inference ----------------------------------------------------------------------

    def adapter_for(self, owner: str, model: Any, param: str = "model") -> Adapter | None:
        """None for the base model, else the adapter of the caller's saved checkpoint ``model``."""
        if model is None or model == BASE_MODEL:
            return None
        match = _MODEL_ID.match(model) if isinstance(model, str) else None
        if match is None:
            raise ValidationError(f"{param}: must be {BASE_MODEL!r} or '<name>/<finetune_id>@<step>'", param=param)
        ft = self.finetune(owner, match["finetune_id"], param)
        step = int(match["step"])
        adapter = None
        if self.store.checkpoint_state(ft.finetune_id, step) == "saved":
            adapter = self.registry.checkpoint(ft.finetune_id, step, ft.rank)
        if adapter is None:
            raise not_found(f"{param}: step {step} of finetune {ft.finetune_id} is not a saved checkpoint", param)
        return adapter

    def infer(self, owner: str, kind: str, body: Any) -> dict:
        """``/query``, ``/caption``, ``/point`` or ``/detect`` → the response (``stream`` is the caller's)."""
        protocol.validate_inference(kind, body)
        adapter = self.adapter_for(owner, body.get("model"))
        self.engine.check_fits(dict(body, skill=kind), "")
        self.prepare(body, "")
        t0 = time.perf_counter()
        out = self.engine.infer(kind, body, adapter)
        usage = out.pop("usage")
        elapsed = (time.perf_counter() - t0) * 1000
        return {"request_id": request_id(kind), **out,
                "metrics": {**usage, "decode_time_ms": round(elapsed, 2)}}

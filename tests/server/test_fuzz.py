"""Fuzz the published OpenAPI schema (schemathesis): no input yields a 5xx or a non-JSON error.

Bounded and deterministic: a fixed number of examples per operation and mode, derandomized."""

from __future__ import annotations

import warnings

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from .conftest import Api, item

EXAMPLES = 6  # per operation and mode: ~23 operations x 2 modes x (1 or 2 finetune ids) ≈ 400 cases


def test_fuzzing_the_openapi_schema_finds_no_server_error(server):
    api = Api(server.url, server.api_key)
    fid = api.finetune("fuzzed")
    request, gt = item(71)
    api.ok("POST", "/v1/tuning/train_step", {"finetune_id": fid, "groups": [
        {"mode": "sft", "request": request, "target": gt}]})
    api.ok("POST", f"/v1/tuning/finetunes/{fid}/checkpoints/save")
    spec = requests.get(server.url + "/openapi.json", timeout=30).json()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    session = requests.Session()
    auth = {"X-Moondream-Auth": server.api_key}
    failures: list[str] = []
    cases = 0

    for op in operations:
        # A second pass pins the finetune id (path or body) to a real one, to reach past the 404 into
        # the validators; DELETE of the finetune itself is left random so the pinned one survives.
        pinnable = ("{finetune_id}" in op.path or op.path.endswith(("/rollouts", "/train_step"))) and not (
            op.method.upper() == "DELETE" and op.path.endswith("{finetune_id}"))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for pinned in (False, True) if pinnable else (False,):
                path_parameters = {"finetune_id": fid} if pinned and "{finetune_id}" in op.path else None
                strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)

                @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
                @given(case=strategy)
                def run(case) -> None:
                    nonlocal cases
                    cases += 1
                    if pinned and isinstance(case.body, dict) and "finetune_id" in case.body:
                        case.body["finetune_id"] = fid
                    resp = case.call(base_url=server.url, session=session, headers=auth, timeout=60)
                    if resp.status_code >= 500:
                        failures.append(f"{op.label} {mode.value}: {resp.status_code} {resp.text[:300]}")
                    elif resp.status_code >= 400 and "error" not in resp.json():
                        failures.append(f"{op.label} {mode.value}: {resp.status_code} without an error body")

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        run()
                    except Unsatisfiable:
                        pass  # nothing to make invalid here (e.g. a fixed path parameter, no body)
    assert not failures, failures[:5]
    assert cases >= 200
    assert api.ok("GET", "/health")["ok"]  # still serving

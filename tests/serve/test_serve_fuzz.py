"""Schemathesis against the service's own OpenAPI schema with every check it has, positive and
negative examples, bounded to about a minute: no 5xx, every status and header documented, valid
bodies accepted, invalid ones rejected, responses match their schemas."""

from __future__ import annotations

import time

import pytest
import schemathesis
import schemathesis.specs.openapi.checks  # noqa: F401 - registers the OpenAPI checks
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS
from schemathesis.config import SchemathesisConfig
from serve_testlib import live_server

from serve.backend import ModelBackend

BUDGET_S = 60.0


@pytest.fixture(scope="module")
def api_schema(micro_model, index_dir, video_root):
    from serve.app import create_app
    from serve.index.store import load_index
    from serve.settings import Settings

    backend = ModelBackend(micro_model, load_index(index_dir, use_gpu=False))
    app = create_app(
        Settings(allowed_roots=[str(video_root)], max_body_bytes=1 << 20, decode_timeout_s=5), backend=backend
    )
    with live_server(app, log_level="warning") as url:
        yield schemathesis.openapi.from_url(url + "/openapi.json", config=_config())


def _config() -> SchemathesisConfig:
    # A schema-valid video request can still carry bytes that are no decodable video (415), too many
    # seconds (413) or a start past the video's end (400): JSON schema cannot say "a valid mp4".
    video_ops = {
        "include-path-regex": "^/v1/(video/embeddings|search)$",
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "413", "415", "429"]
            }
        },
    }
    # Too many inputs / too long a text is invalid data the service rejects with 413, not 400.
    rejected = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
    return SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": rejected}}, "operations": [video_ops]}
    )


def test_all_checks_pass(api_schema):
    # schemathesis' own pytest plugin does not run under this pytest; drive its strategies directly
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/embeddings", "/v1/video/embeddings", "/v1/search", "/info"}
    checks = CHECKS.get_all()
    assert len(checks) >= 10
    seen: list[int] = []
    stop_at = time.monotonic() + BUDGET_S
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:
            if time.monotonic() > stop_at:
                break

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
            )
            def check(case):
                if time.monotonic() > stop_at:
                    return
                response = case.call_and_validate(checks=checks, timeout=20)
                seen.append(response.status_code)
                if response.status_code >= 400:
                    assert set(response.json()) <= {"error", "type", "id"}

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (a GET without parameters)
                assert mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET"
    assert len(seen) >= 2 * len(operations) and any(400 <= s < 500 for s in seen) and 200 in seen

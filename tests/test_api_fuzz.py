"""Property-based fuzzing of every API operation from /openapi.json (schemathesis).

Bounded: a few examples per operation, no shrinking; random uploads fail fast
in the media probe. The property is that nothing answers 5xx and every 4xx has
the `{error: {code, message}}` shape, whatever the inputs.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

import app as server

_TMP = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"facereason-fuzz-{os.getpid()}")
_APP = server.create_app(server.Settings(ui=False, tmp_dir=_TMP, request_timeout_s=60))
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    if 400 <= response.status_code < 500:
        err = response.json()["error"]
        assert isinstance(err["code"], str) and err["code"]
        assert isinstance(err["message"], str) and err["message"]


def test_fuzzing_left_no_uploads_behind():
    """Runs after the fuzz cases (file order): every request's temp dir is gone."""
    import time

    t0 = time.monotonic()
    while os.path.isdir(_TMP) and os.listdir(_TMP) and time.monotonic() - t0 < 30:
        time.sleep(0.1)
    assert not os.path.isdir(_TMP) or os.listdir(_TMP) == []

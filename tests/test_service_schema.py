"""Property-based checks of the whole API against its own OpenAPI schema (schemathesis).

Every operation gets a bounded number of generated requests, valid and invalid; none may get a
500, every invalid one must be refused with a 4xx, and every answer must match the schema
(status, content type, headers, body).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from serving import running_server

from tripletface.service.keys import add_key

pytestmark = pytest.mark.slow

OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("POST", "/v1/people/{name}/faces"),
    ("POST", "/v1/identify"),
    ("POST", "/v1/verify"),
    ("GET", "/v1/people"),
    ("DELETE", "/v1/people/{name}"),
]


@pytest.fixture(scope="module")
def write_key(tmp_path_factory):
    """A keys file holding one write key: (its path, the key)."""
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    return path, add_key(path, "write")


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, write_key):
    gallery = tmp_path_factory.mktemp("schema") / "people.db"
    with running_server(gallery, "--api-keys", str(write_key[0])) as server:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_every_operation_is_checked(api_schema):
    listed = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_operation_keeps_its_schema(api_schema, write_key, method, path):
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(cases)
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        # A schema-valid photo may still be refused (400: no face in it): the schema cannot say
        # what a photo shows, so that one check is left out; every other one runs.
        case.call_and_validate(
            headers={"Authorization": f"Bearer {write_key[1]}"},
            timeout=60,
            excluded_checks=[checks.positive_data_acceptance],
        )

    check()

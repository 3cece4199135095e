"""openstacksdk's faults translated where they enter (GuardedConnection): typed, named, retried when safe.

FakeProxy stands in for an openstacksdk service proxy that answers with the faults a real cloud gives
(503 from a restarting API, 403 from a policy, 404, 413 over quota); the lab's services cannot be made
to answer them on cue.
"""

import pytest
from openstack import exceptions as sdk

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import faults
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import NotFoundError, QuotaError


class FakeProxy:
    def __init__(self, answers):
        self.answers = list(answers)  # raised in turn (an exception) or returned
        self.calls = 0

    def _next(self):
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def get_volume(self, _volume_id):
        return self._next()

    def create_volume(self, **_kwargs):
        return self._next()

    def volumes(self, details=True):
        yield "vol-a"
        yield self._next()


def http(status, details="the service said so"):
    return sdk.HttpException(message=f"HTTP {status}", http_status=status, details=details)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(faults.time, "sleep", lambda _s: None)


def guarded(proxy):
    return faults.GuardedConnection(type("Conn", (), {"block_storage": proxy})()).block_storage


def test_a_read_is_tried_again_after_a_503_and_then_answers():
    proxy = FakeProxy([http(503), http(503), "volume"])
    assert guarded(proxy).get_volume("vol-a") == "volume" and proxy.calls == 3


def test_a_create_is_never_sent_twice_and_a_503_is_a_typed_error_naming_the_call():
    proxy = FakeProxy([http(503), "volume"])
    with pytest.raises(faults.OpenStackUnavailableError) as err:
        guarded(proxy).create_volume(size=1)
    assert proxy.calls == 1 and "block_storage.create_volume" in str(err.value) and "503" in str(err.value)


def test_a_list_failing_while_read_is_read_again_whole():
    proxy = FakeProxy([sdk.HttpException(message="gateway", http_status=502), "vol-b"])
    assert guarded(proxy).volumes() == ["vol-a", "vol-b"] and proxy.calls == 2


def test_refusals_are_typed_by_what_the_service_said():
    cases = [(http(403, "policy"), faults.OpenStackRefusedError, "may not"), (http(404), NotFoundError, "not found"),
             (http(413, "VolumeSizeExceedsAvailableQuota"), QuotaError, "quota"),
             (http(400, "bad size"), faults.OpenStackRefusedError, "HTTP 400")]  # fmt: skip
    for fault, kind, words in cases:
        proxy = FakeProxy([fault])
        with pytest.raises(kind) as err:
            guarded(proxy).get_volume("vol-a")
        assert words in str(err.value) and proxy.calls == 1, (fault, err.value)


def test_what_is_not_the_clouds_fault_passes_unchanged():
    proxy = FakeProxy([KeyError("a bug of ours")])
    with pytest.raises(KeyError):
        guarded(proxy).get_volume("vol-a")

"""Volumes attached side by side, with a fake attach (mock): the lab shows the attach itself
(tests/functional/openstack); these are the orders and the failures it cannot produce on demand:
two attaches provably at once, and a detach that fails."""

import threading
from contextlib import contextmanager

import eventlet
import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import attach
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import AttachError


class FakeAttach:
    """attach_for_write's stand-in (mock): every attach waits at a barrier for the others, so the
    set attaches only if they run at once; ``fail_detach`` names the volumes whose detach fails."""

    def __init__(self, count, fail_detach=(), fail_attach=()):
        self.barrier = threading.Barrier(count, timeout=5)
        self.fail_detach, self.fail_attach = set(fail_detach), set(fail_attach)
        self.threads, self.detached = {}, []

    @contextmanager
    def __call__(self, client, volume_id, **_kwargs):
        self.threads[volume_id] = threading.current_thread()
        self.barrier.wait()
        if volume_id in self.fail_attach:
            raise AttachError(f"Cinder refused to attach volume {volume_id} to this host")
        try:
            yield f"/dev/fake/{volume_id}"
        finally:
            assert threading.current_thread() is self.threads[volume_id], "detached by another thread"
            self.detached.append(volume_id)
            if volume_id in self.fail_detach:
                raise AttachError(f"volume {volume_id} did not detach")


def test_paths_come_in_order_attached_at_once_each_by_a_thread_of_its_own(monkeypatch):
    fake = FakeAttach(3)
    monkeypatch.setattr(attach, "attach_for_write", fake)
    with attach.attach_all(None, ["a", "b", "c"]) as paths:
        assert paths == ["/dev/fake/a", "/dev/fake/b", "/dev/fake/c"]
        assert (
            len({id(t) for t in fake.threads.values()}) == 3 and threading.current_thread() not in fake.threads.values()
        )
    assert sorted(fake.detached) == ["a", "b", "c"]


def test_one_refused_attach_raises_and_the_others_detach(monkeypatch):
    fake = FakeAttach(2, fail_attach=["b"])
    monkeypatch.setattr(attach, "attach_for_write", fake)
    with pytest.raises(AttachError, match="volume b"), attach.attach_all(None, ["a", "b"]):
        pytest.fail("entered with a volume refused")
    assert fake.detached == ["a"]


def test_a_failed_detach_is_raised_after_every_other_volume_detached(monkeypatch):
    fake = FakeAttach(3, fail_detach=["a"])
    monkeypatch.setattr(attach, "attach_for_write", fake)
    with pytest.raises(AttachError, match="volume a did not detach"), attach.attach_all(None, ["a", "b", "c"]):
        pass
    assert sorted(fake.detached) == ["a", "b", "c"]


def test_the_works_own_error_is_not_hidden_by_a_failed_detach(monkeypatch):
    fake = FakeAttach(2, fail_detach=["a", "b"])
    monkeypatch.setattr(attach, "attach_for_write", fake)
    with pytest.raises(RuntimeError, match="copy failed"), attach.attach_all(None, ["a", "b"]):
        raise RuntimeError("copy failed")
    assert sorted(fake.detached) == ["a", "b"]


def test_close_returns_after_a_holder_ran_eventlet(monkeypatch):
    """os-brick's calls run eventlet, and a thread that did never ends for Thread.join (greenlet 3):
    closing waits for the holder's own word instead."""

    @contextmanager
    def green_attach(client, volume_id, **_kwargs):
        eventlet.sleep(0)
        yield f"/dev/fake/{volume_id}"

    monkeypatch.setattr(attach, "attach_for_write", green_attach)
    finished = []

    def attach_and_close():
        with attach.attach_all(None, ["a", "b"]) as paths:
            finished.append(paths)

    worker = threading.Thread(target=attach_and_close, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert finished == [["/dev/fake/a", "/dev/fake/b"]] and not worker.is_alive()

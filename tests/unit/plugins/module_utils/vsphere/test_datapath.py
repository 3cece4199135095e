"""What a reader that stopped before serving means: VDDK's VIX code in its log names the option to fix."""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import datapath
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import DataPathError

CHOICE = datapath.ReaderChoice(datapath.Reader.XMS, "the collection's reader")


class FakeExitedProcess:
    """Stands for an nbdkit that has exited with status 1."""

    returncode = 1

    def poll(self):
        return self.returncode


@pytest.mark.parametrize(
    ("log", "parameter", "words"),
    [
        ("VixDiskLib_ConnectEx: Insufficient permissions in the host operating system (VIX error 3014)",
         "password", "could not log in"),
        ("VixDiskLib_ConnectEx: SSL security error (VIX error 30201)", "hostname", "certificate"),
        ("VixDiskLib_ConnectEx: the snapshot was not found (VIX error 13003)", None, "run the sync again"),
        ("nbdkit: error: cannot open file", None, "Check VDDK"),
    ],
)  # fmt: skip
def test_a_reader_that_stopped_names_what_to_fix(tmp_path, log, parameter, words):
    path = tmp_path / "nbdkit.log"
    path.write_text(f"nbdkit: python[1]: error: {log}\n")
    with pytest.raises(DataPathError) as err:
        datapath._serving(str(tmp_path / "nbd.sock"), FakeExitedProcess(), str(path), CHOICE)
    assert err.value.parameter == parameter and words in err.value.hint and "the collection's reader" in str(err.value)


@pytest.fixture
def plugins(monkeypatch, tmp_path):
    """Mock of nbdkit's plugin probe (Debian has no vddk plugin, so the lab cannot show a host that has one):
    ``plugins.add(name)`` makes nbdkit report that plugin. Also a VDDK laid out in tmp_path."""
    present = set()
    monkeypatch.setattr(datapath, "_has_plugin", lambda _nbdkit, plugin: plugin in present)
    monkeypatch.setattr(datapath.shutil, "which", lambda _name: "/usr/sbin/nbdkit")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "libvixDiskLib.so.8").touch()
    return present


def test_auto_takes_nbdkits_own_plugin_where_the_host_has_it_and_the_collections_elsewhere(plugins, tmp_path):
    plugins.update({"vddk", "python"})
    assert datapath.check_vddk(str(tmp_path)).reader is datapath.Reader.NBDKIT_VDDK
    assert datapath.check_vddk(str(tmp_path), datapath.Reader.XMS).reader is datapath.Reader.XMS
    plugins.discard("vddk")
    choice = datapath.check_vddk(str(tmp_path))
    assert choice.reader is datapath.Reader.XMS and "no vddk plugin" in choice.why
    assert choice.plugin("/w") == ["python", "/w/xms_vddk_reader.py"]


@pytest.mark.parametrize(
    ("present", "reader", "words"),
    [
        (set(), datapath.Reader.AUTO, "neither"),
        ({"python"}, datapath.Reader.NBDKIT_VDDK, "no vddk plugin"),
        ({"vddk"}, datapath.Reader.XMS, "no python plugin"),
    ],
)
def test_a_reader_the_host_lacks_is_refused_naming_the_option(plugins, tmp_path, present, reader, words):
    plugins.update(present)
    with pytest.raises(DataPathError) as err:
        datapath.check_vddk(str(tmp_path), reader)
    assert err.value.parameter == "reader" and words in str(err.value)

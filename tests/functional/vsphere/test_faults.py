"""vSphere's faults, translated where they enter (vsphere/faults.py), against the lab's vCenter (vcsim).

A session that vCenter ended (as it ends idle ones) is logged in again and the call answered; a fault is a
typed error naming the call and the object, never "internal error". The privilege a NoPermission names is
shown with pyVmomi's own fault object: vcsim grants every privilege, so nothing real can answer with one.
"""

import pytest
from pyVmomi import vim

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import faults, inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereClient
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import VmNotFoundError

from .conftest import connection


def test_a_session_vcenter_ended_is_logged_in_again_and_the_call_answered(lab):
    with VSphereClient.connect(connection(lab)) as mine, VSphereClient.connect(connection(lab)) as admin:
        key = mine.content.sessionManager.currentSession.key
        admin.content.sessionManager.TerminateSession(sessionId=[key])
        vm = inventory.find_vm(mine, name="lab-vm-1")  # the first call after the end: NotAuthenticated, then again
        assert inventory.inventory(mine, vm).name == "lab-vm-1"
        assert mine.content.sessionManager.currentSession.key != key


def test_a_fault_is_a_typed_error_naming_the_call_and_the_object(client):
    ghost = vim.VirtualMachine("vm-999999", client.si._stub)
    with pytest.raises(faults.VSphereFault) as err:
        ghost.PowerOnVM_Task()
    assert "PowerOnVM_Task" in str(err.value) and "vm-999999" in str(err.value)
    with pytest.raises(VmNotFoundError):  # the fault a caller tells apart: still told apart
        inventory.find_vm(client, moref="vm-999999")


def test_no_permission_names_the_privilege_and_the_object():
    fault = vim.fault.NoPermission(privilegeId="VirtualMachine.State.CreateSnapshot",
                                   object=vim.VirtualMachine("vm-42"), msg="Permission denied")  # fmt: skip
    typed = faults.translate("CreateSnapshot_Task", vim.VirtualMachine("vm-42"), fault)
    assert "VirtualMachine.State.CreateSnapshot" in str(typed) and "vm-42" in str(typed)
    assert typed.parameter == "username"

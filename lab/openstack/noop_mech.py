"""An ML2 mechanism driver that binds ports without an L2 agent: those of the lab's fake-driver compute host
(compute2), which runs no guest and so has no data plane. compute1's ports are the linuxbridge agent's: this
driver comes after linuxbridge and never binds them, so a port that linuxbridge cannot bind there fails as in
production instead of being bound to nothing."""

from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api

AGENT_HOSTS = {"compute1"}  # hosts with the linuxbridge agent (lab/openstack/up.sh)


class NoopBindMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        if context.host in AGENT_HOSTS:
            return
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OVS,
                {portbindings.CAP_PORT_FILTER: True, portbindings.OVS_HYBRID_PLUG: False},
                status=constants.PORT_STATUS_ACTIVE,
            )
            return

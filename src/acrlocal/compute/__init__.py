"""The compute room: virtual machines as Linux namespaces of this machine that look like Azure VMs from inside
(IMDS at 169.254.169.254, Azure's names, Microsoft's az, Docker Engine) and keep the host out.

:mod:`.vms` is a VM's record, :mod:`.store` its row, :mod:`.sandbox` its directory and what is made there,
:mod:`.vminit` the program that boots it and runs as its PID 1, :mod:`.machine` a running VM as the server holds it,
:mod:`.runtime` the VMs this server runs (create, power, identities, processes), :mod:`.dns` the VMs' DNS stub,
:mod:`.console` a shell in a VM over a WebSocket, :mod:`.run_command` ARM's ``runCommand``, :mod:`.tools` what a VM
gets from this host. docs/architecture.md says what a VM isolates and what it does not.
"""

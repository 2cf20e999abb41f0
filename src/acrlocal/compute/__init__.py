"""The compute room: virtual machines as sandboxes on this machine, each with its own home directory, environment
file and IMDS listener (through which its managed identities get their tokens).

:mod:`.vms` is a VM and its sandbox on disk, :mod:`.store` its row, :mod:`.runtime` the VMs this server runs
(create, identities, delete, listeners). :mod:`.network` is what VMs see of the server, :mod:`.enter` how a program
runs inside a VM, :mod:`.run_command` ARM's ``runCommand``, :mod:`.tools` what a VM gets from this host. A VM is
not a security boundary (see docs/architecture.md).
"""

"""The compute room: virtual machines as sandboxes on this machine, each with its own home directory, environment
file and IMDS listener (through which its managed identities get their tokens)."""

"""The registry room: the OCI Distribution v1.1 data plane, ACR's token service and its ``/acr/v1`` API."""

"""The identity room: an Entra-ID-shaped directory (tenants, subscriptions, principals, managed identities),
signing keys, Entra-shaped access tokens, the Entra endpoints and IMDS."""

"""One file per OWASP API Security Top 10 (2023) item that applies; docs/security.md maps each item to its tests."""

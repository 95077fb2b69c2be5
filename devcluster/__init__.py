"""A real Kubernetes control plane on loopback, for development only (never in an image).

Why it exists as its own top-level package: two things start the same control
plane, the API-server test suite (tests/e2e) and the newcomer's demo
(scripts/demo.py), and a script must not import from tests/. Like `bench/`, it
lives at the repository root, outside the shipped packages (`fetcher`,
`webhook`), and needs only what `make .venv/.installed` installs plus the
envtest binaries named by ``KUBEBUILDER_ASSETS``.
"""

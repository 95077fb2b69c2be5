"""Serving certificates: issuing them, and the store that reloads them."""

"""Ferry's mutating admission webhook: it adds the fetcher to opted-in pods (docs/admission.md)."""

"""Ferry's mutating admission webhook.

Why it exists: it rewrites an opted-in pod at creation so that the fetcher
(`fetcher/`) runs inside it, with the pod's own AWS identity, and writes the
requested secrets to an in-memory volume before the app starts. The policy is
pure (resolve.py, mutate.py and the builders); app.py is the HTTP edge and
__main__.py the command line (`python -m webhook serve|inject|certs`).
"""

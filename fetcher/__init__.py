"""Ferry's fetcher: AWS Secrets Manager secrets and SSM parameters, written into a pod's volume.

Why it exists as a package: the webhook imports `fetcher.spec` (the one spec
model), and the injected containers run ``python -m fetcher``. So this file
imports nothing: importing the spec model must not pull in boto3.

In-process entry points (tests, benchmarks): `fetcher.sources.fetch_all`,
`fetcher.render.render`, `fetcher.writer.swap_directory`,
`fetcher.loop.deliver` / `refresh_once` / `run_sidecar`, and the API call
counter on `fetcher.aws.AwsClients.calls`.
"""

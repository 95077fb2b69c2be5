"""Test support shared by the test suite and the benchmarks: real parts on loopback, one copy of each helper.

Why it exists: the tests and `bench/` need the same fakes and builders (a fake
kube-apiserver, moto seeding, AdmissionReview builders, the TLS server in a
thread, the restricted-PSS checker, the fault proxy, the leak scanner). Keeping
one copy here means a fix lands everywhere. `bench` imports it as
`tests.support` (run the benchmarks with ``python -m bench.<name>`` from the
repository root).

- `paths`: the repository root and the recorded kube-apiserver fixtures; `net`: a free loopback port;
- `kubeapi`: `FakeKubeAPI`, a kube-apiserver on loopback serving recorded responses;
- `aws`: moto seeding, local HTTP stubs, fetcher clients, specs and the fetcher command;
- `fetch`, `swap`: running the fetcher and the atomic swap in subprocesses;
- `reviews`: AdmissionReview builders and `decode_patch`;
- `tlsserver`: `TLSServer`, the webhook's server in a background thread;
- `webhook_server`: the webhook under test with a static cluster view;
- `pss`: the Pod Security Standard "restricted" checker;
- `faultproxy`, `leakscan`: fault injection and secret-leak scanning;
- `ferrylib`, `secretlib`: Ferry installed in the real control plane, and an admin client of it (the API-server
  suite and `bench/apiserver_admission.py`, `bench/secret_resync.py`; never pytest).
"""

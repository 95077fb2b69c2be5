"""The cluster side: the Kubernetes API client and the watch caches the policy reads."""

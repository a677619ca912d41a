"""gpu-k8s CrossGuard policy pack (a package so tests can `from policy import rules`)."""

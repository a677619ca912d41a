"""gpu-k8s components: one ComponentResource per module, plus pure helpers."""

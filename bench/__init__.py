"""k8scc benchmark suite: `python -m bench` (see docs/performance.md)."""

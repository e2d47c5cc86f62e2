"""A real Kubernetes control plane and node (kubelet, containerd, runc) with images that behave
like Fabric's, for k8scc's tests and for exploring by hand (`make testbed`)."""

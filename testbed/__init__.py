"""A real Kubernetes control plane (etcd, kube-apiserver) and a node agent that runs pods as
Linux processes, for k8scc's tests and for exploring by hand (`make testbed`)."""

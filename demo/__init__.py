"""`make demo`: a local cluster and Fabric network with a chaincode built and launched by k8scc."""

"""k8scc: a Hyperledger Fabric external chaincode builder and launcher for Kubernetes."""

__version__ = "0.1.0"

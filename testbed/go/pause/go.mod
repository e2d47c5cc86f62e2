module k8scc.test/testbed/pause

go 1.26.0

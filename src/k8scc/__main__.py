from k8scc.cli import main

main()

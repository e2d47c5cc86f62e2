from testbed.cluster import main

main()

import sys

# The end-to-end network (a real peer and orderer) is not wired into the demo yet.
print("make demo: not yet — the end-to-end Fabric network is still being built", file=sys.stderr)
sys.exit(0)

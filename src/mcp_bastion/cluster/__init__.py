"""Cluster mode (Issue 12): several instances behind a round-robin balancer, sharing Redis.

`bus` is the one module that talks to Redis for the cluster (instance records, the revocation channel); `registry`
keeps this instance registered with a heartbeat and knows the others.
"""

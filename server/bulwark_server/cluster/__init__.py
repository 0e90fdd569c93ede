"""The control plane itself: leader election among replicas and the cluster status."""

"""``make bench``: datastream's embedded server against etcd on this machine (see docs/benchmarks.md)."""

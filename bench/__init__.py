"""Benchmark harness for the Luman server: `make bench`, i.e. `python -m bench`.

h2load drives real gRPC calls over h2c at the product server and at a bare grpcio server on the
same machine; every run is verified before its numbers count. See BENCHMARKS.md.
"""

"""The `crib` command line: the daemon's entry point and a crictl-compatible CRI client."""

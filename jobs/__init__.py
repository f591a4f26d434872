"""busnet's Ray batch work and the `busnet` command line."""

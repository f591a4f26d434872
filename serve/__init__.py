"""The Ray Serve application for Hybrid-MT-ESTAN and its HTTP client."""

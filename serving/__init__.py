"""slimgate's gateway: serves registry variants (Ray Serve application, router, controller)."""

"""HTTP: routes parse requests and shape responses; the runtime does the work."""

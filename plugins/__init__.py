"""Hook specifications and the registration of the built-in stages."""

"""The trainer service: training jobs as a service (see README.md)."""

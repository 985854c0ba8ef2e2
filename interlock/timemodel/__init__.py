"""What K devices would need: the critical-path clock, the pipeline clock, emulated devices."""

"""Measurements: action timing, traces, FLOPs, memory, torch.profiler."""

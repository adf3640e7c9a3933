"""Measuring: FID and KID (offline Inception), classical baselines, the benchmark, speed, the demo.

The evaluation layer sits above training and inference: it may import them, they never import it.
"""

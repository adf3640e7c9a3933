"""Measuring: FID (offline Inception), classical baselines, the benchmark, speed, model scores, the demo.

The evaluation layer sits above training and inference: it may import them, they never import it.
"""

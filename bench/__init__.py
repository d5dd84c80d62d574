"""Benchmarks (scripts run from the command line) and the evaluation code they share (:mod:`.evaluation`).

Never imported by ComfyUI or by ``nodes/``: the scripts load the pack as ``vista`` (``bench/_common.py``).
"""

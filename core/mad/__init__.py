"""MAD — Merge-Attend-Diffuse (papers/mad-merge-attend-diffuse): the windows' tokens are merged onto the
canvas before self/cross attention, attended there, and split back, for the first τ of the steps.

* :mod:`.attention_merge` — token index, merge/split, merged self/cross attention, the τ schedule.
"""

"""What a conversion through faults must equal: the same objects, byte for byte, but its own paths and time."""

from __future__ import annotations

import json


def assert_same_conversion(clean: dict[str, bytes], flaky: dict[str, bytes]) -> None:
    """``{key under the prefix: bytes}`` of a fault-free conversion written under ``.../clean/`` and of
    one through faults under ``.../flaky/``."""
    assert sorted(flaky) == sorted(clean)
    differing = [k for k in clean if clean[k] != flaky[k]]
    # Only the reports and manifests differ: they name their own location and the time taken.
    assert all(k.endswith(("/conversion_report.json", "/conversion_manifest.json")) for k in differing), differing
    for key in differing:
        mine, theirs = (json.loads(v[key].replace(b"/clean", b"/flaky")) for v in (clean, flaky))
        assert {**mine, "elapsed_s": 0} == {**theirs, "elapsed_s": 0}, key

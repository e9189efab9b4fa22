"""Every random draw comes from a generator derived from (run seed, sample id, stage).

So any sample can be regenerated alone, stages don't disturb each other's draws, and the same
config and seed give the same bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(run_seed: int, sample_id: str, stage: str) -> int:
    """A stable 63-bit integer seed for one (run, sample, stage); independent of PYTHONHASHSEED."""
    digest = hashlib.blake2b(f"{run_seed}\x1f{sample_id}\x1f{stage}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def rng_for(run_seed: int, sample_id: str, stage: str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(run_seed, sample_id, stage))

"""The keyed random stream the randomization list and the kit list are drawn from (steps 1 and 2
of randomization/generator.py's algorithm): HMAC-SHA256 of a secret seed over "<stream>|<counter>",
read 4 bytes at a time, with unbiased draws below n. It lives here, not in randomization, because
dosing's kit lists draw from it too and the two apps do not import each other.
"""

from __future__ import annotations

import hashlib
import hmac


class StratumStream:
    """The deterministic random integers of one stratum (steps 1 and 2)."""

    def __init__(self, seed: str, stratum: str):
        self.key = seed.encode("utf-8")
        self.stratum = stratum
        self.counter = 0
        self.buffer = b""

    def _next_word(self) -> int:
        if len(self.buffer) < 4:
            message = f"{self.stratum}|{self.counter}".encode()
            self.buffer += hmac.new(self.key, message, hashlib.sha256).digest()
            self.counter += 1
        word, self.buffer = self.buffer[:4], self.buffer[4:]
        return int.from_bytes(word, "big")

    def below(self, n: int) -> int:
        if n <= 0:
            raise ValueError("n must be positive")
        limit = 2**32 - (2**32 % n)
        while True:
            value = self._next_word()
            if value < limit:
                return value % n

"""Checking the audit chain (trialsite/audit.py builds it): every hash recomputed here, in
Python, from the rows as they are now, and compared with the links stored and with the seals
published outside the database."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection

from trialsite.audit import CHAIN_CONTENT_SQL, GENESIS


@dataclass
class Finding:
    kind: str  # changed, removed, inserted, link, seal
    event_id: int | None
    position: int | None
    message: str


@dataclass
class Verification:
    database: str
    rows_chained: int = 0
    head: str = GENESIS.hex()
    last_event_id: int = 0
    unchained: int = 0
    seals_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        ordered = [f for f in self.findings if f.kind != "seal"] or self.findings
        return min(ordered, key=lambda f: (f.event_id is None, f.event_id or 0)) if ordered else None


def read_seals(path: Path) -> list[dict]:
    seals = []
    if not path.exists():
        return seals
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            seals.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{path}, line {number}: not a seal (JSON expected)") from None
    return seals


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def verify(seals: list[dict], *, seal_database: str | None = None) -> Verification:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
    result = Verification(database=database)
    applicable = [seal for seal in seals if seal.get("database") == (seal_database or database)]
    by_position: dict[int, list[dict]] = {}
    for seal in applicable:
        by_position.setdefault(int(seal["rows"]), []).append(seal)
    matched_at: list[tuple[int, int]] = []  # (position, event id) of seals that still match

    previous_stored = GENESIS
    recomputed = GENESIS
    expected = 1
    with connection.chunked_cursor() as cursor:
        cursor.execute(
            f"SELECT c.position, c.event_id, c.row_hash, c.chain_hash, e.id IS NOT NULL, {CHAIN_CONTENT_SQL} "
            "FROM trialsite_auditchain AS c LEFT JOIN trialsite_auditevent AS e ON e.id = c.event_id "
            "ORDER BY c.position"
        )
        for position, event_id, row_hash, chain_hash, present, content in cursor:
            row_hash, chain_hash = bytes(row_hash), bytes(chain_hash)
            if position != expected:
                result.findings.append(
                    Finding("link", event_id, position, f"chain links {expected} to {position - 1} were removed")
                )
            if not present:
                computed = row_hash
                result.findings.append(
                    Finding("removed", event_id, position, f"audit row {event_id} (link {position}) was removed")
                )
            else:
                computed = sha256(bytes(content))
                if computed != row_hash:
                    result.findings.append(
                        Finding("changed", event_id, position, f"audit row {event_id} (link {position}) was changed")
                    )
            if sha256(previous_stored + row_hash) != chain_hash:
                result.findings.append(
                    Finding(
                        "link",
                        event_id,
                        position,
                        f"chain link {position} (audit row {event_id}) does not follow from the link before it",
                    )
                )
            recomputed = sha256(recomputed + computed)
            for seal in by_position.get(position, []):
                result.seals_checked += 1
                if recomputed.hex() == seal["head"] and int(seal["last_event_id"]) == event_id:
                    matched_at.append((position, event_id))
                else:
                    after = max((m for m in matched_at if m[0] < position), default=(0, 0))
                    result.findings.append(
                        Finding(
                            "seal",
                            None,
                            position,
                            f"the seal of {seal['sealed_at']} ({position} rows, head {seal['head'][:16]}...) no "
                            f"longer matches: the trail was rewritten and rehashed between audit row "
                            f"{after[1] + 1 if after[1] else 'one'} and audit row {seal['last_event_id']}",
                        )
                    )
            previous_stored = chain_hash
            expected = position + 1
            result.rows_chained = position
            result.last_event_id = event_id
    result.head = recomputed.hex()
    for position, seals_there in sorted(by_position.items()):
        if position > result.rows_chained:
            for seal in seals_there:
                result.seals_checked += 1
                result.findings.append(
                    Finding(
                        "seal",
                        None,
                        position,
                        f"the seal of {seal['sealed_at']} covered {position} rows up to audit row "
                        f"{seal['last_event_id']}, the chain now has {result.rows_chained}: rows were removed",
                    )
                )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.id FROM trialsite_auditevent AS e WHERE e.id <= %s AND NOT EXISTS "
            "(SELECT 1 FROM trialsite_auditchain AS c WHERE c.event_id = e.id) ORDER BY e.id",
            [result.last_event_id],
        )
        for (event_id,) in cursor.fetchall():
            result.findings.append(
                Finding("inserted", event_id, None, f"audit row {event_id} was inserted: it is not in the chain")
            )
        cursor.execute("SELECT count(*) FROM trialsite_auditevent WHERE id > %s", [result.last_event_id])
        result.unchained = cursor.fetchone()[0]
    return result

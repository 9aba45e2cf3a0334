"""No trial lives in the code: its NCT id, arm codes, kit types and visit codes are in its protocol
file only. Everything the application reads (Python, templates, scripts, styles) outside the
protocol files, migrations and tests is searched for every such code of every protocol in
protocols/: as an NCT id anywhere, and as a quoted string for the short codes (a bare word
like "END" or "C1" may be English or CSS; a quoted one is a value the code compares with)."""

import datetime
import re
from pathlib import Path

from django.conf import settings

from schedules.services import visit_plan
from trialsite.protocol import check_file

ROOT = Path(settings.BASE_DIR)
SEARCHED = ("*.py", "*.html", "*.js", "*.css", "*.txt", "*.cfg", "*.toml", "*.yml", "*.yaml", "Makefile", "Dockerfile")
SKIPPED_PARTS = {".venv", "var", "tests", "migrations", "protocols", ".git", "node_modules", "staticfiles"}


def _application_files():
    for pattern in SEARCHED:
        for path in ROOT.rglob(pattern):
            relative = path.relative_to(ROOT)
            if SKIPPED_PARTS & set(relative.parts) or relative.name == "pyproject.toml":
                continue
            yield path


def _codes():
    nct_ids, short_codes = set(), set()
    for protocol_file in sorted((ROOT / "protocols").glob("*.toml")):
        protocol = check_file(protocol_file)
        nct_ids.add(protocol.trial.nct_id)
        short_codes |= {arm.code for arm in protocol.arms}
        short_codes |= set(protocol.kit_types)
        short_codes |= {visit.code for visit in visit_plan(schedule=protocol.schedule, day0=datetime.date(2026, 1, 1))}
    return nct_ids, short_codes


def _quoted(codes):
    alternatives = "|".join(re.escape(code) for code in sorted(codes))
    return re.compile(rf"""["']({alternatives})["']""")


def test_no_trial_arm_kit_or_visit_code_outside_the_protocol_files():
    nct_ids, short_codes = _codes()
    assert nct_ids and short_codes
    quoted = _quoted(short_codes)
    found = []
    for path in _application_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if any(nct_id in line for nct_id in nct_ids) or quoted.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "trial codes in the code:\n" + "\n".join(found)


def test_the_search_would_find_a_planted_code(tmp_path):
    """The search is not blind: a code planted in a file is found by the same pattern."""
    nct_ids, short_codes = _codes()
    code = sorted(short_codes)[0]
    quoted = _quoted(short_codes)
    assert quoted.search(f'if arm.code == "{code}":')
    assert any(nct_id in f"/t/{nct_id}/participants/" for nct_id in nct_ids)

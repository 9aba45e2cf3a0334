"""The MedDRA codes shipped with the CTCAE v5.0 terms, checked one by one against published
CTCAE term lists (a CTCAE v4.03 term-to-LLT dictionary, whose codes v5.0 kept for these terms,
and the CTCAE v6.0 workbook's v5.0 terms): a wrong code would file every event under another
MedDRA term in the expedited reports and the safety tables."""

from safety.ctcae import TERMS

VERIFIED = {
    "epistaxis": 10015090,
    "lung_infection": 10061229,
    "upper_respiratory_infection": 10046300,
    "sepsis": 10040047,
    "neutrophil_count_decreased": 10029366,
    "platelet_count_decreased": 10035528,
    "alt_increased": 10001551,
    "ast_increased": 10003481,
    "infusion_related_reaction": 10051792,
    "nausea": 10028813,
    "fatigue": 10016256,
    "rash_maculopapular": 10037868,
}
# CTCAE gives these no single code (per organ, or the site's own words): the data manager codes them.
CODED_BY_THE_DATA_MANAGER = {"gi_haemorrhage", "haemorrhage_other", "other"}


def test_every_shipped_meddra_code_is_the_verified_one():
    assert {code: term.meddra_code for code, term in TERMS.items() if term.meddra_code is not None} == VERIFIED


def test_only_terms_without_a_single_ctcae_code_have_none():
    assert {code for code, term in TERMS.items() if term.meddra_code is None} == CODED_BY_THE_DATA_MANAGER

"""The CTCAE v5.0 terms this system offers for adverse events, with their MedDRA codes where
CTCAE v5.0 gives one, and a short form of each grade's definition (the full text is the CTCAE
document's). A pure table: the protocol schema reads it to check `adverse_events.special_interest`,
so it imports nothing of Django.

Terms are keyed by a code of our own (stable, lower case) because a protocol file names them;
"other" is CTCAE's "Other, specify": the site writes the term in words. "haemorrhage_other"
stands for CTCAE's organ-specific bleeding terms not listed here (CTCAE has no single
"haemorrhage" term): it also needs the site's words. MedDRA codes left None are ones CTCAE
gives per organ (no single code) and are coded by the data manager."""

from __future__ import annotations

from dataclasses import dataclass, field

CTCAE_VERSION = "5.0"


@dataclass(frozen=True)
class Term:
    code: str
    term: str
    term_zh: str
    meddra_code: int | None
    soc: str
    grades: dict[int, str] = field(default_factory=dict)
    # The term needs the site's own words (CTCAE's "Other, specify").
    needs_text: bool = False


_DEATH = "Death"

TERMS: dict[str, Term] = {
    term.code: term
    for term in (
        Term(
            "epistaxis",
            "Epistaxis",
            "鼻出血",
            10015090,
            "Respiratory, thoracic and mediastinal disorders",
            {
                1: "Mild symptoms; intervention not indicated",
                2: "Moderate symptoms; intervention indicated (e.g. nasal packing, cauterization)",
                3: "Transfusion, radiologic, endoscopic or operative intervention indicated",
                4: "Life-threatening consequences; urgent intervention indicated",
                5: _DEATH,
            },
        ),
        Term(
            "gi_haemorrhage",
            "Gastrointestinal haemorrhage (upper or lower)",
            "消化道出血",
            None,
            "Gastrointestinal disorders",
            {
                1: "Mild; intervention not indicated",
                2: "Moderate symptoms; intervention indicated",
                3: "Transfusion indicated; invasive intervention indicated; hospitalization",
                4: "Life-threatening consequences; urgent intervention indicated",
                5: _DEATH,
            },
        ),
        Term(
            "haemorrhage_other",
            "Haemorrhage, other site (specify)",
            "其他部位出血(请注明)",
            None,
            "Vascular disorders",
            {
                1: "Mild; intervention not indicated",
                2: "Moderate; minimal, local or noninvasive intervention indicated",
                3: "Severe; transfusion or invasive intervention indicated; hospitalization",
                4: "Life-threatening consequences; urgent intervention indicated",
                5: _DEATH,
            },
            needs_text=True,
        ),
        Term(
            "lung_infection",
            "Lung infection",
            "肺部感染",
            10061229,
            "Infections and infestations",
            {
                2: "Moderate symptoms; oral intervention indicated (e.g. antibiotic)",
                3: "IV antibiotic, antifungal or antiviral intervention indicated; invasive intervention indicated",
                4: "Life-threatening consequences; urgent intervention indicated",
                5: _DEATH,
            },
        ),
        Term(
            "upper_respiratory_infection",
            "Upper respiratory infection",
            "上呼吸道感染",
            10046300,
            "Infections and infestations",
            {
                2: "Moderate symptoms; oral intervention indicated (e.g. antibiotic)",
                3: "IV antibiotic, antifungal or antiviral intervention indicated; invasive intervention indicated",
                4: "Life-threatening consequences; urgent intervention indicated",
                5: _DEATH,
            },
        ),
        Term(
            "sepsis",
            "Sepsis",
            "脓毒症",
            10040047,
            "Infections and infestations",
            {4: "Life-threatening consequences; urgent intervention indicated", 5: _DEATH},
        ),
        Term(
            "neutrophil_count_decreased",
            "Neutrophil count decreased",
            "中性粒细胞计数降低",
            10029366,
            "Investigations",
            {
                1: "<LLN - 1500/mm³",
                2: "<1500 - 1000/mm³",
                3: "<1000 - 500/mm³",
                4: "<500/mm³",
            },
        ),
        Term(
            "platelet_count_decreased",
            "Platelet count decreased",
            "血小板计数降低",
            10035528,
            "Investigations",
            {
                1: "<LLN - 75,000/mm³",
                2: "<75,000 - 50,000/mm³",
                3: "<50,000 - 25,000/mm³",
                4: "<25,000/mm³",
            },
        ),
        Term(
            "alt_increased",
            "Alanine aminotransferase increased",
            "丙氨酸氨基转移酶升高",
            10001551,
            "Investigations",
            {1: ">ULN - 3.0 x ULN", 2: ">3.0 - 5.0 x ULN", 3: ">5.0 - 20.0 x ULN", 4: ">20.0 x ULN"},
        ),
        Term(
            "ast_increased",
            "Aspartate aminotransferase increased",
            "天冬氨酸氨基转移酶升高",
            10003481,
            "Investigations",
            {1: ">ULN - 3.0 x ULN", 2: ">3.0 - 5.0 x ULN", 3: ">5.0 - 20.0 x ULN", 4: ">20.0 x ULN"},
        ),
        Term(
            "infusion_related_reaction",
            "Infusion related reaction",
            "输注相关反应",
            10051792,
            "General disorders and administration site conditions",
            {
                1: "Mild transient reaction; infusion interruption not indicated",
                2: "Therapy or infusion interruption indicated but responds promptly to treatment",
                3: "Prolonged; recurrence of symptoms after initial improvement; hospitalization indicated",
                4: "Life-threatening consequences; urgent intervention indicated",
                5: _DEATH,
            },
        ),
        Term(
            "nausea",
            "Nausea",
            "恶心",
            10028813,
            "Gastrointestinal disorders",
            {
                1: "Loss of appetite without alteration in eating habits",
                2: "Oral intake decreased without significant weight loss, dehydration or malnutrition",
                3: "Inadequate oral caloric or fluid intake; tube feeding, TPN or hospitalization indicated",
            },
        ),
        Term(
            "fatigue",
            "Fatigue",
            "乏力",
            10016256,
            "General disorders and administration site conditions",
            {
                1: "Fatigue relieved by rest",
                2: "Fatigue not relieved by rest; limiting instrumental ADL",
                3: "Fatigue not relieved by rest, limiting self care ADL",
            },
        ),
        Term(
            "rash_maculopapular",
            "Rash maculo-papular",
            "斑丘疹",
            10037868,
            "Skin and subcutaneous tissue disorders",
            {
                1: "Macules/papules covering <10% BSA",
                2: "Macules/papules covering 10-30% BSA; limiting instrumental ADL",
                3: "Macules/papules covering >30% BSA; limiting self care ADL",
            },
        ),
        Term(
            "other",
            "Other, specify",
            "其他(请注明)",
            None,
            "",
            {
                1: "Mild; asymptomatic or mild symptoms; intervention not indicated",
                2: "Moderate; minimal, local or noninvasive intervention indicated",
                3: "Severe or medically significant but not immediately life-threatening",
                4: "Life-threatening consequences; urgent intervention indicated",
                5: _DEATH,
            },
            needs_text=True,
        ),
    )
}


def grades_of(code: str) -> tuple[int, ...]:
    """The grades CTCAE defines for the term (sepsis has only 4 and 5; nausea stops at 3)."""
    return tuple(sorted(TERMS[code].grades))

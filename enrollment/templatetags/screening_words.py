"""The screening log in words: each reason by its label in the reader's language."""

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def reason_words(context, screening) -> list[tuple[str, str]]:
    """The screening's reasons as (code, words), labelled by the code as the reports label it
    (the protocol's own text, English or Chinese; age and consent by the rule), never one
    patient's stored wording. The labels of a trial are read once per page."""
    from reports.selectors import reason_labels
    from trialsite.models import Trial

    cache = context.render_context.setdefault("reason_labels_by_trial", {})
    trial_id = screening.site.trial_id
    if trial_id not in cache:
        cache[trial_id] = reason_labels(Trial.objects.get(pk=trial_id))
    labels = cache[trial_id]
    codes = [reason.get("code") for reason in screening.reasons or [] if isinstance(reason, dict)]
    return [(code, labels.get(code, code)) for code in codes]


@register.simple_tag
def verdict_reasons(screening) -> list[str]:
    """The verdict's reasons as sentences in the reader's language: the rules are applied again
    to the recorded answers (stored sentences are in the language of whoever saved them). The
    stored ones when that no longer gives the same reasons (the protocol changed since)."""
    from enrollment.eligibility import evaluate

    stored = [reason for reason in screening.reasons or [] if isinstance(reason, dict)]
    if not stored:
        return []
    consent = screening.consents.order_by("-signed_on", "-id").first()
    verdict = evaluate(
        eligibility=screening.site.trial.protocol.eligibility,
        date_of_birth=screening.date_of_birth,
        screening_date=screening.screening_date,
        consent_date=consent.signed_on if consent else None,
        answers=dict(screening.answers.values_list("criterion_code", "answer")),
    )
    if [reason["code"] for reason in verdict.reasons] != [reason.get("code") for reason in stored]:
        return [reason.get("text", "") for reason in stored]
    return [reason["text"] for reason in verdict.reasons]

"""Report section "Latent language": which language each layer's lens reading speaks (Wendler et al. 2024).

Added when the report is asked for a language prompt set (``ReportContext.language_prompts``: a task name of
:func:`interp.lens.load_language_prompts` or a list of :class:`~interp.lens.LanguageItem`; ``interp report
--language-prompts cloze``, ``build_report(..., language_prompts="cloze")``); ``interp latent-language`` builds it
with :func:`latent_language_section`.

Example:
    >>> import interp
    >>> from interp.lens import latent_language, load_language_prompts
    >>> from interp.report import Report
    >>> from interp.report.sections.latent_language import latent_language_section
    >>> m = interp.load_model("smollm2-135m")
    >>> res = latent_language(m, load_language_prompts("repetition", languages=["en", "fr"])[:2], progress=False)
    >>> rep = Report("latent language")
    >>> latent_language_section(rep, res)
    >>> [s.title for s in rep.sections]
    ['Latent language']
"""

from __future__ import annotations

from interp.lens import LatentLanguageResult, find_tuned_lens, latent_language, load_language_prompts
from interp.report.document import Report
from interp.report.sections.context import ReportContext

ORDER = 12


FAST_ITEMS = 24  # prompts read with ctx.fast (every k-th of the set)


def add_section(rep: Report, ctx: ReportContext) -> None:
    """The section, when the context names a language prompt set (``ctx.language_prompts``; ``interp report
    --language-prompts TASK``); with ``ctx.fast``, an evenly spaced subset of :data:`FAST_ITEMS` prompts."""
    prompts = ctx.language_prompts
    model = ctx.model
    if prompts is None or not model.adapter.is_causal or model.weights.W_U is None:
        return
    items = load_language_prompts(prompts) if isinstance(prompts, str) else list(prompts)
    if ctx.fast and len(items) > FAST_ITEMS:
        items = items[:: -(-len(items) // FAST_ITEMS)]
    lenses = ["logit", "tuned"] if find_tuned_lens(model) is not None else ["logit"]
    latent_language_section(rep, latent_language(model, items, lens=lenses, progress=False))


def latent_language_section(rep: Report, res: LatentLanguageResult) -> None:
    """Curves of the mass on the target language, English and the source per layer (each lens), the mean mass
    per language, and the last layer's accuracy per source and target language."""
    sec = rep.section("Latent language", "Each layer's lens reading at the prompt's last token, summed over the "
                      "tokens that start the answer word in each language (Wendler et al. 2024): a middle-layer bump "
                      "in English on non-English prompts means the model routes through English. Ribbons are 95% "
                      "intervals over prompts.")
    for lens in res.lenses:
        sec.result(res, views=("roles",), name=f"{lens} LatentLanguageResult", lens=lens)
    sec.result(res, views=("languages",), name="LatentLanguageResult by language")
    if "translation" in res.tasks:
        sec.result(res, views=("accuracy",), name="LatentLanguageResult accuracy")
    acc = res.accuracy()
    by_target = acc.groupby(["task", "target"]).apply(
        lambda d: (int(d["items"].sum()), float((d.top1 * d["items"]).sum() / d["items"].sum())),
        include_groups=False)
    sec.table(["task", "target", "items", "top-1 at the last layer"],
              [(t, g, n, f"{a:.2f}") for (t, g), (n, a) in by_target.items()],
              caption="How often the model's own next token starts the answer in the target language: the languages "
                      "it handles.")

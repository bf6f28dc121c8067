"""The main job: run every landed tool on a model and a prompt and lay the results out in a report.

The built-in sections: the model, next-token predictions, the residual stream per layer and position,
attention heads (entropy per head and the most focused heads' patterns), clean vs corrupted prompt; then
the tools' sections (one module each in :mod:`interp.report.sections`: logit and tuned lens, layer
metrics, patching, probing, heads, induction, features...), and the trace manifest.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Sequence
from typing import Any

import torch

from interp.errors import BadInputError, bad_value
from interp.models import Model
from interp.plot import attention_pattern, bar_top_tokens, heatmap, layer_curves
from interp.report.document import Report
from interp.report.sections import section_modules
from interp.report.sections.context import ReportContext
from interp.sites import HeadRef
from interp.trace import Trace
from interp.trace.trace import command_line

SINK_SHARE = 0.5  # a head whose queries put more than this on the first token mostly attends to the sink


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("interp", "torch", "transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "?"
    return out


def build_report(model: Model, inputs: str, *, corrupt: str | None = None, top_k: int = 10,
                 n_heads_shown: int = 3, command: str | None = None, skip_layers: bool = True,
                 fast: bool = False, sections: Sequence[str] | None = None,
                 language_prompts: str | Sequence[Any] | None = None) -> Report:
    """Run the model on a prompt (and a corrupted one) and build the report.

    Args:
        model: a loaded model.
        inputs: the clean prompt (one text).
        corrupt: an optional corrupted prompt with the same number of tokens.
        top_k: next-token candidates shown.
        n_heads_shown: attention patterns drawn (the most focused heads).
        command: the command line recorded in the report (default: this process's).
        skip_layers: include the skip-layer loss (three forwards per layer: ~10 s for SmolLM2 on a CPU).
        fast: ask the tools' sections (:mod:`interp.report.sections`) for their quick settings.
        sections: the tools' sections to add, by module name (``["lens", "heads"]``; see
            :func:`interp.report.sections.section_names`); ``None`` adds every one, ``[]`` only the built-in ones.
        language_prompts: a latent-language prompt set (``"translation"``, ``"repetition"``, ``"cloze"``, ``"all"``
            or :class:`~interp.lens.LanguageItem` s) for the "Latent language" section; ``None``: no such section.

    Returns:
        The :class:`~interp.report.Report`; ``.write(path)`` writes the HTML page and its JSON.

    Raises:
        BadInputError: an empty prompt, a corrupted prompt of another length, a bad ``top_k`` or ``n_heads_shown``.
        UnknownNameError: an unknown section name.

    Example:
        >>> import interp
        >>> from interp.report import build_report
        >>> m = interp.load_model("smollm2-135m")
        >>> rep = build_report(m, "The capital of France is", corrupt="The capital of Italy is", sections=[])
        >>> [s.title for s in rep.sections]
        ['Model', 'Next-token prediction', 'Residual stream', 'Attention heads', 'Clean vs corrupted', 'Trace manifest']
        >>> rep.to_dict()["sections"]["Attention heads"]["focused_heads"]["labels"]["head"]
        ['L11H6', 'L16H0', 'L11H1']
    """
    if not isinstance(inputs, str) or not inputs.strip():
        raise BadInputError(f"the prompt must be a non-empty text, got {inputs!r}")
    if corrupt is not None and (not isinstance(corrupt, str) or not corrupt.strip()):
        raise BadInputError(f"the corrupted prompt must be a non-empty text, got {corrupt!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise bad_value("top_k", top_k, "an int >= 1")
    if isinstance(n_heads_shown, bool) or not isinstance(n_heads_shown, int) or n_heads_shown < 0:
        raise bad_value("n_heads_shown", n_heads_shown, "an int >= 0")
    mods = section_modules(sections)  # unknown names fail before any forward
    trace, logits = _run(model, inputs)
    tokens = list(trace.tokens[0])
    rep = Report(f"interp report — {model.name}", command=command or command_line(),
                 subtitle=f"prompt: {inputs!r}" + (f" · corrupted: {corrupt!r}" if corrupt else ""))
    _model_section(rep, model, tokens)
    if logits is not None and model.adapter.is_causal:
        _prediction_section(rep, model, logits, top_k)
    _resid_section(rep, trace, tokens)
    _heads_section(rep, trace, tokens, n_heads_shown)
    if corrupt is not None:
        _corrupt_section(rep, model, trace, corrupt)

    ctx = ReportContext(model=model, prompt=inputs, corrupt=corrupt, trace=trace, tokens=tokens, fast=fast,
                        skip_layers=skip_layers, language_prompts=language_prompts)
    for mod in mods:
        mod.add_section(rep, ctx)

    sec = rep.section("Trace manifest", "Where the activations in this report came from: the model, its weights "
                      "fingerprint, the dtype, the hooks captured and the command.")
    sec.code(trace.manifest.to_dict(), caption="Provenance of the activations drawn above.")
    return rep


def _run(model: Model, prompt: str) -> tuple[Trace, torch.Tensor | None]:
    res = model.run(prompt, capture=["resid_post", "pattern"])
    return res.trace, res.logits


def _layer_labels(n_layers: int) -> list[str]:
    return [f"L{i}" for i in range(n_layers)]


def _model_section(rep: Report, model: Model, tokens: Sequence[str]) -> None:
    d = model.dims
    sec = rep.section("Model", "What model made this report: its architecture, sizes, weights and the versions of "
                      "the software, then the prompt's tokens.")
    sec.table(["property", "value"], [
        ("name", model.name), ("family", model.adapter.family), ("weights", model.source),
        ("layers", d.n_layers), ("heads (query / key-value)", f"{d.n_heads} / {d.n_kv_heads}"),
        ("d_model", d.d_model), ("d_head", d.d_head), ("d_mlp", d.d_mlp), ("vocabulary", d.d_vocab),
        ("weights fingerprint", model.fingerprint), *(_versions().items()),
    ])
    sec.tokens(tokens, label=f"{len(tokens)} tokens:")


def _prediction_section(rep: Report, model: Model, logits: torch.Tensor, top_k: int) -> None:
    sec = rep.section("Next-token prediction", "The model's most likely next tokens after the prompt; bar length is "
                      "the probability.")
    probs = logits[0, -1].float().softmax(-1)
    p, ids = probs.topk(min(top_k, probs.shape[-1]))
    toks = model.to_str_tokens(ids[None])[0]
    sec.figure(bar_top_tokens(toks, p, title=f"Top {len(toks)} next tokens after the prompt", x_title="probability"))
    sec.numbers("top_next_tokens", p, axes=["token"], labels={"token": toks})
    sec.numbers("top_next_token_ids", ids, axes=["token"], labels={"token": toks})


def _resid_section(rep: Report, trace: Trace, tokens: Sequence[str]) -> None:
    resid = trace.stack("resid_post")[:, 0].float()  # [layer, pos, d_model]
    n_layers = resid.shape[0]
    norms = resid.norm(dim=-1)  # [layer, pos]
    layers = _layer_labels(n_layers)
    sec = rep.section("Residual stream", "How large the residual stream is after each block and how much each block "
                      "turns it: rows are layers, columns the prompt's tokens, colour the log10 of the norm.")
    sec.text("L2 norm of resid_post, the residual stream after each block, per token. Very large norms on the first "
             "token are the usual attention-sink 'massive activations'.")
    sec.figure(heatmap(norms.clamp_min(1e-12).log10(), x_labels=list(tokens), y_labels=layers,
                       title="log10 ‖resid_post‖", x_title="position", y_title="layer",
                       colorbar_title="log10 norm", signed=False))
    if n_layers > 1:
        cos = torch.nn.functional.cosine_similarity(resid[1:], resid[:-1], dim=-1)  # [layer-1, pos]
        sec.figure(layer_curves({"mean over tokens": cos.mean(1), "last token": cos[:, -1]},
                                x=list(range(1, n_layers)), x_labels=layers[1:],
                                y_title="cosine(resid_post L, resid_post L-1)",
                                title="How much each block turns the residual stream"))
    sec.numbers("resid_post_norm", norms, axes=["layer", "pos"],
                labels={"layer": list(range(n_layers)), "pos": list(tokens)})


def _heads_section(rep: Report, trace: Trace, tokens: Sequence[str], n_shown: int) -> None:
    pats = trace.stack("pattern")[:, 0].float()  # [layer, head, q_pos, k_pos]
    n_layers, n_heads = pats.shape[:2]
    n = int(trace.lengths[0])
    ent = -(pats * pats.clamp_min(1e-12).log()).sum(-1)  # [layer, head, q_pos]
    mean_ent = ent[:, :, 1:n].mean(-1) if n > 1 else ent[:, :, :1].mean(-1)  # [layer, head]
    heads = [[str(HeadRef(L, h)) for L in range(n_layers)] for h in range(n_heads)]  # [head, layer]
    sec = rep.section("Attention heads", "Where each head looks: mean attention entropy per head (low = focused; "
                      "hover a cell for its head, e.g. L5H1) and the attention patterns of the most focused heads.")
    sec.text("Mean attention entropy per head in nats, over the queries after the first token. A head whose "
             "attention sits on one key has entropy 0; uniform attention over n keys has log n.")
    sec.figure(heatmap(mean_ent.T, x_labels=_layer_labels(n_layers), y_labels=[f"H{h}" for h in range(n_heads)],
                       hover=heads, title="attention entropy per head", x_title="layer", y_title="head",
                       colorbar_title="nats", signed=False))
    sec.numbers("attention_entropy", mean_ent, axes=["layer", "head"],
                labels={"layer": list(range(n_layers)), "head": list(range(n_heads))})
    # The most focused heads, leaving out those that mostly look at the first token (the attention sink).
    sink = pats[:, :, 1:n, 0].mean(-1) if n > 1 else torch.zeros_like(mean_ent)  # [layer, head]
    ranked = mean_ent.flatten().argsort().tolist()
    focused = [i for i in ranked if float(sink.flatten()[i]) <= SINK_SHARE][:n_shown] or ranked[:n_shown]
    shown = [HeadRef(*divmod(i, n_heads)) for i in focused]
    if not shown:
        return
    sec.text("The most focused heads that do not mostly attend to the first token (the attention sink); rows are "
             "queries, columns keys:")
    for head in shown:
        sec.figure(attention_pattern(pats[head.layer, head.head, :n, :n], list(tokens[:n]),
                                     title=f"{head} (entropy {float(mean_ent[head.layer, head.head]):.2f} nats)"))
    sec.numbers("focused_heads", torch.stack([mean_ent[h.layer, h.head] for h in shown]), axes=["head"],
                labels={"head": [str(h) for h in shown]})


def _corrupt_section(rep: Report, model: Model, trace: Trace, corrupt: str) -> None:
    other = model.run(corrupt, capture="resid_post").trace
    a, b = trace.tokens[0], other.tokens[0]
    if len(a) != len(b):
        raise BadInputError(f"the corrupted prompt has {len(b)} tokens but the clean one has {len(a)}; they must match "
                            f"position by position: clean {list(a)} vs corrupted {list(b)}")
    ra = trace.stack("resid_post")[:, 0].float()  # [layer, pos, d_model]
    rb = other.stack("resid_post")[:, 0].float()
    diff = (ra - rb).norm(dim=-1) / ra.norm(dim=-1).clamp_min(1e-6)  # [layer, pos]
    sec = rep.section("Clean vs corrupted", "Where the corrupted prompt's residual stream departs from the clean one: "
                      "rows are layers, columns tokens, colour the relative distance (0 = identical).")
    sec.tokens(b, label="corrupted tokens:")
    sec.text("Relative distance ‖clean − corrupted‖ / ‖clean‖ of resid_post: where the corruption enters and how it "
             "spreads through the layers.")
    sec.figure(heatmap(diff, x_labels=list(a), y_labels=_layer_labels(diff.shape[0]),
                       title="relative resid_post difference", x_title="position", y_title="layer", signed=False))
    sec.numbers("resid_relative_difference", diff, axes=["layer", "pos"],
                labels={"layer": list(range(diff.shape[0])), "pos": list(a)})


__all__ = ["build_report"]

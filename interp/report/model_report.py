"""The main job: run every landed tool on a model and a prompt and lay the results out in a report.

Sections so far: the model, next-token predictions, the residual stream per layer and position,
the logit lens (top token per layer and position, KL to the final distribution), layer metrics
(angular distance between layers, sublayer input/output similarity, loss when skipping a layer),
attention heads (entropy per head and the most focused heads' patterns), clean vs corrupted
prompt, then the tools' sections (one module each in ``interp.report.sections``), and the trace
manifest.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Sequence

import torch

from interp.errors import BadInputError
from interp.models import Model
from interp.plot import attention_pattern, bar_top_tokens, heatmap, layer_curves, token_labels
from interp.report.document import Report
from interp.report.sections import section_modules
from interp.report.sections.context import ReportContext
from interp.trace import Trace
from interp.trace.trace import command_line


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("interp", "torch", "transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "?"
    return out


def _real(trace: Trace, i: int = 0) -> int:
    return int(trace.attention_mask[i].sum())


def build_report(model: Model, prompt: str, corrupt: str | None = None, top_k: int = 10,
                 n_heads_shown: int = 3, command: str | None = None, skip_layers: bool = True,
                 fast: bool = False) -> Report:
    """Run the model on ``prompt`` (and ``corrupt``) and build the report.

    Args:
        model: a loaded model.
        prompt: the clean prompt.
        corrupt: an optional corrupted prompt with the same number of tokens.
        top_k: next-token candidates shown.
        n_heads_shown: attention patterns drawn (the most focused heads).
        command: the command line recorded in the report (default: this process's).
        skip_layers: include the skip-layer loss (three forwards per layer: ~10 s for SmolLM2 on a CPU).
        fast: ask the tools' sections (``interp.report.sections``) for their quick settings.

    Example:
        >>> import interp
        >>> from interp.report import build_report
        >>> m = interp.load_model("smollm2-135m")  # doctest: +SKIP
        >>> build_report(m, "The capital of France is", corrupt="The capital of Italy is").write("r.html")  # doctest: +SKIP
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInputError(f"prompt must be a non-empty string, got {prompt!r}")
    d = model.dims
    hooks = ["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"]
    clean = model.run(prompt, capture=hooks)
    trace = clean.trace
    tokens = list(trace.tokens[0])
    labels = token_labels(tokens)
    rep = Report(f"interp report — {model.name}", command=command or command_line(),
                 subtitle=f"prompt: {prompt!r}" + (f" · corrupted: {corrupt!r}" if corrupt else ""))

    sec = rep.section("Model", 'What model made this report: its architecture, sizes, weights and the versions of the software.')
    sec.table(["property", "value"], [
        ("name", model.name), ("family", model.adapter.family), ("weights", model.source),
        ("layers", d.n_layers), ("heads (query / key-value)", f"{d.n_heads} / {d.n_kv_heads}"),
        ("d_model", d.d_model), ("d_head", d.d_head), ("d_mlp", d.d_mlp), ("vocabulary", d.d_vocab),
        ("weights fingerprint", model.fingerprint), *(_versions().items()),
    ])
    sec.tokens(tokens, label=f"{len(tokens)} tokens:")

    if clean.logits is not None and model.adapter.is_causal:
        sec = rep.section("Next-token prediction", "The model's most likely next tokens after the prompt; bar length is the probability.")
        probs = clean.logits[0, -1].float().softmax(-1)
        p, ids = probs.topk(top_k)
        toks = model.to_str_tokens(ids[None])[0]
        sec.figure(bar_top_tokens(toks, p, title=f"Top {top_k} next tokens after the prompt", x_title="probability"))
        sec.numbers("top_next_tokens", p, axes=["rank"], labels={"token": toks, "token_id": ids.tolist()})

    sec = rep.section("Residual stream", 'How large the residual stream is after each block and how much each block turns it; rows are layers, columns tokens.')
    resid = trace.stack("hook_resid_post")[:, 0].float()  # [layer, pos, d_model]
    norms = resid.norm(dim=-1)
    layer_labels = [str(i) for i in range(d.n_layers)]
    sec.text("L2 norm of the residual stream after each block, per token. Very large norms on the first "
             "token are the usual attention-sink 'massive activations'.")
    sec.figure(heatmap(norms.log10(), x_labels=labels, y_labels=layer_labels, title="log10 ‖resid_post‖",
                       x_title="position", y_title="layer", colorbar_title="log10 norm", signed=False))
    cos = torch.nn.functional.cosine_similarity(resid[1:], resid[:-1], dim=-1)  # [layer-1, pos]
    sec.figure(layer_curves({"mean over tokens": cos.mean(1), "last token": cos[:, -1]},
                            x=list(range(1, d.n_layers)), y_title="cosine(resid L, resid L-1)",
                            title="How much each block turns the residual stream"))
    sec.numbers("resid_post_norm", norms, axes=["layer", "pos"], labels={"layer": layer_labels, "pos": tokens})

    sec = rep.section("Attention heads", 'Where each head looks: mean attention entropy per head (low = focused) and the patterns of the most focused heads.')
    pats = trace.stack("attn.hook_pattern")[:, 0].float()  # [layer, head, q, k]
    n = _real(trace)
    ent = -(pats * pats.clamp_min(1e-12).log()).sum(-1)  # [layer, head, q]
    mean_ent = ent[:, :, 1:n].mean(-1) if n > 1 else ent[:, :, :1].mean(-1)
    head_labels = [str(h) for h in range(d.n_heads)]
    sec.text("Mean attention entropy per head (nats; queries after the first). Low entropy = focused heads.")
    sec.figure(heatmap(mean_ent.T, x_labels=layer_labels, y_labels=head_labels, title="attention entropy",
                       x_title="layer", y_title="head", colorbar_title="nats", signed=False))
    sec.numbers("attention_entropy", mean_ent, axes=["layer", "head"], labels={"layer": layer_labels, "head": head_labels})
    # The most focused heads, leaving out those that mostly look at the first token (the attention sink).
    sink = pats[:, :, 1:n, 0].mean(-1) if n > 1 else torch.zeros_like(mean_ent)
    ranked = mean_ent.masked_fill(sink > 0.5, float("inf")).flatten().argsort()
    order = [i for i in ranked.tolist() if sink.flatten()[i] <= 0.5][:n_heads_shown] or ranked[:n_heads_shown].tolist()
    sec.text("The most focused heads that do not mostly attend to the first token (the attention sink):")
    for flat in order:
        L, h = divmod(flat, d.n_heads)
        sec.figure(attention_pattern(pats[L, h, :n, :n], tokens[:n], title=f"layer {L} head {h} "
                                     f"(entropy {float(mean_ent[L, h]):.2f})"))

    if corrupt is not None:
        _corrupt_section(rep, model, trace, prompt, corrupt, labels, layer_labels)

    ctx = ReportContext(model=model, prompt=prompt, corrupt=corrupt, trace=trace, tokens=tokens, fast=fast,
                        skip_layers=skip_layers)
    for mod in section_modules():
        mod.add_section(rep, ctx)

    sec = rep.section("Trace manifest", 'Where the activations in this report came from: model, weights fingerprint, dtype, hooks and command.')
    sec.code(trace.manifest.to_dict(), caption="Provenance of the activations drawn above.")
    return rep


def _corrupt_section(rep: Report, model: Model, trace: Trace, prompt: str, corrupt: str,
                     labels: Sequence[str], layer_labels: Sequence[str]) -> None:
    other = model.run(corrupt, capture="blocks.*.hook_resid_post").trace
    a, b = trace.tokens[0], other.tokens[0]
    if len(a) != len(b):
        raise BadInputError(f"the corrupted prompt has {len(b)} tokens but the clean one has {len(a)}; they must match "
                         f"position by position: clean {list(a)} vs corrupted {list(b)}")
    sec = rep.section("Clean vs corrupted", "Where the corrupted prompt's residual stream departs from the clean one: relative distance per layer and token.")
    sec.tokens(b, label="corrupted tokens:")
    ra = trace.stack("hook_resid_post")[:, 0].float()
    rb = other.stack("hook_resid_post")[:, 0].float()
    diff = (ra - rb).norm(dim=-1) / ra.norm(dim=-1).clamp_min(1e-6)
    sec.text("Relative distance ‖clean − corrupted‖ / ‖clean‖ of the residual stream: where the corruption "
             "enters and how it spreads through the layers.")
    sec.figure(heatmap(diff, x_labels=labels, y_labels=list(layer_labels), title="relative residual difference",
                       x_title="position", y_title="layer", signed=False))
    sec.numbers("resid_relative_difference", diff, axes=["layer", "pos"],
                labels={"layer": list(layer_labels), "pos": list(a)})


__all__ = ["build_report"]

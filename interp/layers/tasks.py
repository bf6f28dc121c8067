"""Task suites to score a (possibly edited) model on: multiple-choice items and next-token text.

Shipped suites (``data/layers``, built by ``data/layers/build.py``): ``capitals`` (cloze multiple choice),
``arithmetic`` (few-shot single-digit addition), ``copying`` (few-shot copying of a word list, 500 items),
``heldout`` (next-token accuracy on held-out English paragraphs). Your own: :meth:`Task.from_items` /
:meth:`Task.from_texts`, or a JSON file of the same layout given to :func:`load_task`.

A choice item is scored by the log-likelihood of each choice's tokens after the prompt (summed over its
tokens); the item is right when the right choice scores highest. A text is scored by top-1 next-token
accuracy and the mean log-likelihood per predicted token. :func:`score` takes ``interventions=``, so any
run plan, head mask or other edit is scored the same way.

Example:
    >>> import interp
    >>> from interp.layers import Task, score
    >>> m = interp.load_model("smollm2-135m")
    >>> task = Task.from_items("mini", [{"prompt": "The capital of France is", "choices": [" Paris", " Rome"],
    ...                                  "answer": 0}])
    >>> score(m, task).accuracy
    1.0
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from interp.errors import BadInputError, unknown_name
from interp.hooks import Intervention, run_with_hooks
from interp.models import Model
from interp.progress import progress as progress_bar

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "layers"
SHIPPED = ("capitals", "arithmetic", "copying", "heldout")


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice item: the prompt, its choices (continuations), and the index of the right one."""

    prompt: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class Task:
    """A named evaluation set: ``kind="choice"`` holds :class:`ChoiceItem` s, ``kind="next_token"`` texts."""

    name: str
    kind: Literal["choice", "next_token"]
    items: tuple[ChoiceItem, ...] = ()
    texts: tuple[str, ...] = ()
    description: str = ""

    def __len__(self) -> int:
        return len(self.items) if self.kind == "choice" else len(self.texts)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {self.kind}, {len(self)} items)"

    def head(self, n: int) -> Task:
        """The first ``n`` items (a quicker run)."""
        return Task(self.name, self.kind, self.items[:n], self.texts[:n], self.description)

    @classmethod
    def from_items(cls, name: str, items: Iterable[Mapping[str, Any]], description: str = "") -> Task:
        """A multiple-choice task from ``{"prompt", "choices", "answer"}`` dicts (``answer``: the right choice's
        index, or the right choice itself).

        Raises:
            BadInputError: an item without a prompt, with fewer than two choices, or whose answer is missing or
                not one of its choices.
        """
        out = []
        for k, it in enumerate(items):
            if not isinstance(it, Mapping):
                raise BadInputError(f"task {name!r} item {k} must be a dict with prompt, choices, answer; got {it!r}")
            prompt, choices, answer = it.get("prompt"), it.get("choices"), it.get("answer")
            if not isinstance(prompt, str) or not prompt:
                raise BadInputError(f"task {name!r} item {k} has no prompt")
            if not isinstance(choices, (list, tuple)) or len(choices) < 2 or not all(
                    isinstance(c, str) and c for c in choices):
                raise BadInputError(f"task {name!r} item {k} needs at least two non-empty string choices, got {choices!r}")
            if answer is None:
                raise BadInputError(f"task {name!r} item {k} ({prompt[:40]!r}) has no answer; give 'answer' as the "
                                    "right choice's index or text")
            if isinstance(answer, str):
                if answer not in choices:
                    raise BadInputError(f"task {name!r} item {k}: answer {answer!r} is not one of its choices {choices!r}")
                answer = list(choices).index(answer)
            if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
                raise BadInputError(f"task {name!r} item {k}: answer {answer!r} is not a choice index "
                                    f"0..{len(choices) - 1}")
            out.append(ChoiceItem(prompt, tuple(choices), answer))
        if not out:
            raise BadInputError(f"task {name!r} has no items")
        return cls(name, "choice", items=tuple(out), description=description)

    @classmethod
    def from_texts(cls, name: str, texts: Iterable[str], description: str = "") -> Task:
        """A next-token task from texts (every position predicts the next token)."""
        texts = tuple(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad or not texts:
            raise BadInputError(f"task {name!r} needs non-empty texts" + (f"; text {bad[0]} is empty" if bad else ""))
        return cls(name, "next_token", texts=texts, description=description)


def load_task(name_or_path: str | Path) -> Task:
    """A shipped suite by name (``capitals``, ``arithmetic``, ``copying``, ``heldout``) or a JSON file of the
    same layout (``{"name", "kind", "items": [...]}``).

    Example:
        >>> len(load_task("copying"))
        500
    """
    path = Path(name_or_path)
    if str(name_or_path) in SHIPPED:
        path = DATA_DIR / f"{name_or_path}.json"
    elif path.suffix != ".json" or not path.exists():
        if path.suffix != ".json":
            raise unknown_name("task", str(name_or_path), SHIPPED)
        raise BadInputError(f"no task file {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path} is not valid JSON: {e}") from None
    kind = doc.get("kind", "choice")
    name = doc.get("name", path.stem)
    if kind == "choice":
        return Task.from_items(name, doc.get("items", []), doc.get("description", ""))
    if kind == "next_token":
        return Task.from_texts(name, [it["text"] if isinstance(it, Mapping) else it for it in doc.get("items", [])],
                               doc.get("description", ""))
    raise BadInputError(f"{path}: kind must be 'choice' or 'next_token', got {kind!r}")


@dataclass(frozen=True)
class TaskScore:
    """A task's score: ``accuracy`` (share of items right / of next tokens predicted), ``loglik`` (mean
    log-likelihood of the right choice per item / per predicted token), ``correct`` ``[items]`` (bool per item;
    per text, the share of its tokens right), ``chance`` (the accuracy of guessing)."""

    task: str
    accuracy: float
    loglik: float
    correct: torch.Tensor
    chance: float

    def __repr__(self) -> str:
        return f"TaskScore({self.task!r}, accuracy={self.accuracy:.3f}, loglik={self.loglik:.3f}, n={len(self.correct)})"


def _encode(model: Model, text: str) -> list[int]:
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids)


def _batches(seqs: Sequence[list[int]], batch_size: int, pad: int) -> Iterable[tuple[range, torch.Tensor, torch.Tensor]]:
    for s in range(0, len(seqs), batch_size):
        chunk = seqs[s:s + batch_size]
        width = max(len(x) for x in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, x in enumerate(chunk):
            ids[r, :len(x)] = torch.tensor(x)
            mask[r, :len(x)] = 1
        yield range(s, s + len(chunk)), ids, mask


def score(model: Model, inputs: Task | str, *, interventions: Sequence[Intervention] = (), batch_size: int = 32,
          progress: bool | None = None) -> TaskScore:
    """Score ``model`` (with ``interventions``) on a task (a :class:`Task` or a shipped suite's name).

    Args:
        model: the model.
        inputs: the evaluation set.
        interventions: edits applied to every forward (run plans from :mod:`interp.layers.edits`, head masks...).
        batch_size: sequences per forward.
        progress: show a progress bar (``None``: the library switch).
    """
    task = load_task(inputs) if isinstance(inputs, str) else inputs
    pad = model.tokenizer.pad_token_id if getattr(model.tokenizer, "pad_token_id", None) is not None else 0
    with torch.no_grad():
        if task.kind == "choice":
            return _score_choice(model, task, list(interventions), batch_size, pad, progress)
        return _score_text(model, task, list(interventions), batch_size, pad, progress)


def _score_choice(model: Model, task: Task, ivs: list[Intervention], batch_size: int, pad: int,
                  progress: bool | None) -> TaskScore:
    # One sequence per item holds its prompt and scores every single-token choice from the prompt's last
    # position; each multi-token choice gets a sequence of its own (prompt + choice). Log-probabilities are
    # taken only at the positions read, not over the whole [batch, seq, vocab] logits.
    seqs: list[list[int]] = []
    reads: list[list[tuple[int, list[int]]]] = []  # per sequence: (flat choice index, choice tokens)
    n_choices = [len(it.choices) for it in task.items]
    first = [sum(n_choices[:i]) for i in range(len(task.items))]
    for i, it in enumerate(task.items):
        p = _encode(model, it.prompt)
        single: list[tuple[int, list[int]]] = []
        for c, choice in enumerate(it.choices):
            ct = _encode(model, choice)
            if not p or not ct:
                raise BadInputError(f"task {task.name!r} item {i}: the prompt or choice {c} encodes to no tokens")
            if len(ct) == 1:
                single.append((first[i] + c, ct))
            else:
                seqs.append(p + ct)
                reads.append([(first[i] + c, ct)])
        if single:
            seqs.append(p)
            reads.append(single)
    ll = torch.zeros(sum(n_choices))
    for rows, ids, mask in progress_bar(list(_batches(seqs, batch_size, pad)), desc=f"scoring {task.name}",
                                        enabled=progress):
        out = run_with_hooks(model, ids, mask, interventions=ivs)
        assert out.logits is not None
        for r, k in enumerate(rows):
            n = len(seqs[k])
            for flat, ct in reads[k]:
                if len(ct) == 1:  # read at the prompt's last position
                    ll[flat] = out.logits[r, n - 1].float().log_softmax(-1)[ct[0]]
                else:  # the choice's tokens end the sequence
                    a = n - len(ct)
                    lp = out.logits[r, a - 1:n - 1].float().log_softmax(-1)
                    ll[flat] = lp.gather(-1, torch.tensor(ct)[:, None]).sum()
    n_items = len(task.items)
    pick = torch.zeros(n_items, dtype=torch.long)
    right_ll = torch.zeros(n_items)
    for i, it in enumerate(task.items):
        mine = ll[first[i]:first[i] + n_choices[i]]
        pick[i] = int(mine.argmax())  # the first of equal maxima, as before
        right_ll[i] = mine[it.answer]
    correct = pick == torch.tensor([it.answer for it in task.items])
    chance = sum(1 / len(it.choices) for it in task.items) / n_items
    return TaskScore(task.name, float(correct.float().mean()), float(right_ll.mean()), correct, chance)


def _score_text(model: Model, task: Task, ivs: list[Intervention], batch_size: int, pad: int,
                progress: bool | None) -> TaskScore:
    seqs = [_encode(model, t) for t in task.texts]
    if any(len(s) < 2 for s in seqs):
        raise BadInputError(f"task {task.name!r}: every text needs at least two tokens")
    per_text = torch.zeros(len(seqs))
    total_ll, total_right, total_n = 0.0, 0, 0
    for rows, ids, mask in progress_bar(list(_batches(seqs, batch_size, pad)), desc=f"scoring {task.name}",
                                        enabled=progress):
        out = run_with_hooks(model, ids, mask, interventions=ivs)
        assert out.logits is not None
        logp = out.logits[:, :-1].float().log_softmax(-1)
        tgt = ids[:, 1:]
        m = mask[:, 1:].bool()
        right = (logp.argmax(-1) == tgt) & m
        lp = logp.gather(-1, tgt[..., None])[..., 0]
        total_ll += float(lp[m].sum())
        total_right += int(right.sum())
        total_n += int(m.sum())
        per_text[list(rows)] = right.sum(-1).float() / m.sum(-1).float()
    return TaskScore(task.name, total_right / total_n, total_ll / total_n, per_text, 1.0 / model.dims.d_vocab)

"""Feature flow on the SAEs of build_dicts.py: share of blocks.4.hook_resid_post features whose best predecessor
(blocks.3.hook_resid_post) decoder cosine is >= 0.5, against SAEs of the same shape with random directions and
against the old shipped 48k-token SAEs; then validate_flow on the flow graphs of a few carried features.

    .venv/bin/python data/features/flow_check.py [SAE_DIR]   (default data/features/smollm2-135m-4k)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import interp
from interp.features import feature_flow, load_saes, similarity, validate_flow
from interp.features.train import initial_directions

ROOT = Path(__file__).resolve().parents[2]
A, B = "blocks.3.hook_resid_post", "blocks.4.hook_resid_post"


def best(saes: dict) -> torch.Tensor:
    return similarity(saes[B], saes[A]).max(1).values


def main() -> None:
    torch.set_num_threads(1)
    path = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "data" / "features" / "smollm2-135m-4k")
    new = load_saes(path)
    old = load_saes()
    b_new, b_old = best(new), best(old)
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(new[B].d_sae, new[B].d_in, generator=g)
    rand_prev = torch.randn(new[A].d_sae, new[A].d_in, generator=g)
    rand = rand / rand.norm(dim=-1, keepdim=True)
    rand_prev = rand_prev / rand_prev.norm(dim=-1, keepdim=True)
    b_rand = (rand @ rand_prev.T).max(1).values
    out = {**{f"new_share_ge_{t}": float((b_new >= t).float().mean()) for t in (0.3, 0.4, 0.5, 0.6)},
           **{f"random_share_ge_{t}": float((b_rand >= t).float().mean()) for t in (0.3, 0.4)},
           "new_median": float(b_new.median()),
           "old_share_ge_0.5": float((b_old >= 0.5).float().mean()), "old_median": float(b_old.median()),
           "random_share_ge_0.5": float((b_rand >= 0.5).float().mean()), "random_median": float(b_rand.median())}
    for h in (A, B):  # how far training moved the decoder rows from where they started
        start = initial_directions(new[h], new[h].d_in)
        out[f"new_{h.split('.')[1]}_cos_to_init_median"] = float(
            torch.nn.functional.cosine_similarity(new[h].W_dec_.float(), start, dim=-1).median())
    print(json.dumps(out, indent=1))
    model = interp.load_model("smollm2-135m")
    texts = [ln for ln in (ROOT / "data" / "corpus" / "english.txt").read_text().splitlines() if ln][-8:]
    # validate the carried features that fire most often on the held-out texts (a silent feature has no correlation)
    with torch.no_grad():
        acts = model.run(texts, capture=[B]).trace[B]
        fires = (new[B].encode(acts.reshape(-1, acts.shape[-1]).float()) > 0).float().mean(0)
    pool = (b_new >= 0.5).nonzero().flatten()
    carried = pool[fires[pool].argsort(descending=True)][:3].tolist()
    for f in carried:
        graph = feature_flow(model, saes={A: new[A], B: new[B]}, hook=B, feature=f, threshold=0.5, top_n=1)
        if not graph.edges:
            continue
        v = validate_flow(model, texts, saes={A: new[A], B: new[B]}, graph=graph, max_tokens=64)
        print(f"feature {f}: {v!r}")
        print(v.to_frame().to_string(max_cols=12))


if __name__ == "__main__":
    main()

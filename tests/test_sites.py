"""Hook-point names: parsing into Sites, listing, glob resolution and the errors for bad names."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interp.sites import Component, Site, UnknownHookError, all_sites, resolve

# The names DESIGN.md promises, written out by hand (the oracle for parse/name round trips).
PER_LAYER_SUFFIXES = [
    "hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post",
    "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z",
    "mlp.hook_pre", "mlp.hook_post", "hook_attn_raw", "hook_mlp_raw", "mlp.hook_router_logits",
    "mlp.hook_router_weights", "mlp.hook_expert_out",
    "hook_cross_attn_out", "cross_attn.hook_q", "cross_attn.hook_k", "cross_attn.hook_v", "cross_attn.hook_pattern",
    "cross_attn.hook_z",  # encoder-decoder cross-attention (issue 25)
    "hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_result",  # per-head points (issue 20)
]
GLOBAL_NAMES = ["hook_embed", "ln_final.hook_normalized", "logits"]

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("suffix", PER_LAYER_SUFFIXES)
@pytest.mark.parametrize("layer", [0, 3, 29, 117])
def test_parse_per_layer_names_round_trip(suffix: str, layer: int) -> None:
    name = f"blocks.{layer}.{suffix}"
    site = Site.parse(name)
    assert site.layer == layer
    assert site.component.value == suffix
    assert site.name == name == str(site)
    assert Site.parse(site) is site  # a Site passes through


@pytest.mark.parametrize("name", GLOBAL_NAMES)
def test_parse_global_names(name: str) -> None:
    site = Site.parse(name)
    assert site.layer is None
    assert site.name == name


def test_every_component_is_reachable_by_name() -> None:
    names = {f"blocks.0.{s}" for s in PER_LAYER_SUFFIXES} | set(GLOBAL_NAMES)
    assert {Site.parse(n).component for n in names} == set(Component) - {Component.HF}


@pytest.mark.parametrize("name", [
    "blocks.0.hook_resid_pr", "blocks.0.hook_resid", "block.0.hook_resid_pre", "blocks.x.hook_resid_pre",
    "blocks.-1.hook_resid_pre", "blocks.0.logits", "blocks.0.hook_embed", "hook_resid_pre", "attn.hook_z",
    "blocks.0.attn.hook_attn_out", "", " ", "blocks..hook_z", "blocks.0.", "Logits", "blocks.0.HOOK_Z",
    "ln_final.hook_normalised", "blocks.1.mlp.hook_post.extra",
])
def test_parse_rejects_unknown_names(name: str) -> None:
    with pytest.raises(UnknownHookError):
        Site.parse(name)


def test_unknown_name_message_lists_close_matches() -> None:
    with pytest.raises(UnknownHookError) as e:
        Site.parse("blocks.0.hook_resid_prex")
    msg = str(e.value)
    assert "Did you mean" in msg and "blocks.0.hook_resid_pre" in msg
    assert not msg.startswith("'")  # KeyError would quote the message; UnknownHookError prints it plainly
    assert isinstance(e.value, KeyError)


@pytest.mark.parametrize("bad", [3, 3.5, None, b"blocks.0.hook_z", ["blocks.0.hook_z"], {"a": 1}, Component.Z])
def test_parse_rejects_non_strings_with_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        Site.parse(bad)  # type: ignore[arg-type]


def test_site_constructor_validates_layer() -> None:
    with pytest.raises(ValueError, match="needs a layer"):
        Site(Component.RESID_PRE)
    with pytest.raises(ValueError, match="needs a layer"):
        Site(Component.Z, -1)
    with pytest.raises(ValueError, match="has no layer"):
        Site(Component.LOGITS, 0)
    with pytest.raises(ValueError, match="has no layer"):
        Site(Component.EMBED, 2)


def test_component_axes_match_design() -> None:
    assert Component.PATTERN.axes == ("batch", "head", "q_pos", "k_pos")
    assert Component.Z.axes == ("batch", "pos", "head", "d_head")
    assert Component.MLP_POST.axes == ("batch", "pos", "d_mlp")
    assert Component.LOGITS.axes == ("batch", "pos", "vocab")
    inside = {c for c in Component if c.inside_attention}
    assert inside == {Component.Q, Component.K, Component.V, Component.PATTERN}


def test_all_sites_order_and_count() -> None:
    comps = [Component.EMBED, Component.RESID_PRE, Component.RESID_POST, Component.LN_FINAL, Component.LOGITS]
    names = [s.name for s in all_sites(3, comps)]
    assert names == [
        "hook_embed",
        "blocks.0.hook_resid_pre", "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_pre", "blocks.2.hook_resid_post",
        "ln_final.hook_normalized", "logits",
    ]
    assert all_sites(0, comps) == [Site(Component.EMBED), Site(Component.LN_FINAL), Site(Component.LOGITS)]


AVAILABLE = all_sites(3, [Component.EMBED, Component.RESID_PRE, Component.ATTN_OUT, Component.Z,
                          Component.PATTERN, Component.RESID_POST, Component.LOGITS])


def test_resolve_glob_exact_and_site_in_forward_order_without_duplicates() -> None:
    got = resolve(["blocks.2.hook_resid_post", "blocks.*.hook_resid_post", Site(Component.EMBED),
                   "blocks.0.attn.hook_z", "blocks.0.attn.hook_z"], AVAILABLE)
    assert [s.name for s in got] == [
        "hook_embed", "blocks.0.attn.hook_z", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_post",
    ]
    assert [s.name for s in resolve("blocks.1.attn.*", AVAILABLE)] == ["blocks.1.attn.hook_z",
                                                                     "blocks.1.attn.hook_pattern"]
    assert [s.name for s in resolve("blocks.[02].hook_attn_out", AVAILABLE)] == ["blocks.0.hook_attn_out",
                                                                                "blocks.2.hook_attn_out"]
    assert len(resolve("*", AVAILABLE)) == len(AVAILABLE)


def test_resolve_unavailable_name_lists_close_matches() -> None:
    with pytest.raises(UnknownHookError) as e:
        resolve("blocks.3.hook_resid_post", AVAILABLE)  # well-formed, but only 3 layers
    msg = str(e.value)
    assert "blocks.2.hook_resid_post" in msg and "3 layers" in msg
    with pytest.raises(UnknownHookError, match=re.escape("blocks.0.hook_resid_pre")):
        resolve("blocks.0.hook_resid_mid", AVAILABLE)  # a valid name this "model" lacks


@pytest.mark.parametrize("pattern", ["blocks.*.hook_nothing", "blocks.9*.hook_z", "zz*", "blocks.?.attn.hook_q"])
def test_resolve_pattern_matching_nothing_raises(pattern: str) -> None:
    with pytest.raises(UnknownHookError):
        resolve(pattern, AVAILABLE)


def test_resolve_malformed_name_raises_with_suggestion() -> None:
    with pytest.raises(UnknownHookError, match="Did you mean"):
        resolve("blocks.0.hook_resid_pots", AVAILABLE)


@pytest.mark.parametrize("bad", [[3], [None], ["blocks.0.attn.hook_z", 1.5], [b"logits"]])
def test_resolve_non_string_items_raise_type_error(bad: list) -> None:
    with pytest.raises(TypeError):
        resolve(bad, AVAILABLE)


def test_resolve_site_not_available_raises() -> None:
    with pytest.raises(UnknownHookError):
        resolve(Site(Component.MLP_POST, 0), AVAILABLE)


# --- properties -----------------------------------------------------------------------------------

_FRAGMENTS = ["blocks", ".", "0", "1", "2", "12", "attn", "mlp", "hook_", "resid_pre", "resid_post", "z", "q",
              "pattern", "pre", "post", "ln_final", "hook_normalized", "logits", "embed", "*", "?", "[", "]",
              "-", "_", " ", "x", "hook_mlp_out", "hook_attn_out"]
name_like = st.lists(st.sampled_from(_FRAGMENTS), min_size=0, max_size=8).map("".join)
garbage = st.one_of(name_like, st.text(max_size=40))


@FAST
@given(garbage)
def test_parse_never_raises_anything_but_unknown_hook_error(text: str) -> None:
    try:
        site = Site.parse(text)
    except UnknownHookError:
        return
    assert Site.parse(site.name) == site
    assert text in (site.name, site.short)  # no normalisation: a name parses only in a canonical spelling


@FAST
@given(st.one_of(garbage, st.lists(garbage, min_size=1, max_size=3)))
def test_resolve_garbage_raises_unknown_hook_error_or_returns_available_sites(names: str | list[str]) -> None:
    try:
        got = resolve(names, AVAILABLE)
    except UnknownHookError:
        return
    assert got and set(got) <= set(AVAILABLE)


@FAST
@given(st.one_of(st.integers(), st.floats(), st.none(), st.binary(), st.lists(st.integers(), min_size=1),
                 st.dictionaries(st.text(), st.integers())))
def test_non_string_names_raise_type_error(obj: object) -> None:
    with pytest.raises(TypeError):
        Site.parse(obj)  # type: ignore[arg-type]
    with pytest.raises((TypeError, UnknownHookError)):
        resolve([obj], AVAILABLE)  # type: ignore[list-item]


def test_parse_rejects_trailing_newline() -> None:
    with pytest.raises(UnknownHookError):
        Site.parse("blocks.0.hook_resid_pre\n")


def test_parse_rejects_non_ascii_digits_and_leading_zeros() -> None:
    with pytest.raises(UnknownHookError):
        Site.parse("blocks.01.hook_mlp_out")
    with pytest.raises(UnknownHookError):
        Site.parse("blocks.\u0661.attn.hook_z")

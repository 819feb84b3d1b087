"""Methods named in the field that cannot train here: each card says what it is, why not for the chosen
model, and what to use instead; ESFT's card is shown for a dense model only (a mixture of experts trains with ESFT itself)."""

from __future__ import annotations

from pipelines.methods import METHODS
from pipelines.methods import elsewhere as cards
from studio import method_service as ms


def test_each_card_explains_itself_and_points_to_a_method_that_exists():
    labels = {m.label for m in METHODS.values()} | {"Freeze tuning", "prompt tuning"}
    assert {c.key for c in cards.CARDS} == {"hypertuning", "esft", "quiet_star"}
    for card in cards.CARDS:
        assert len(card.what) > 80 and len(card.why_not) > 40 and card.paper
        named = [label for label in labels if label.split(" (")[0].lower() in card.instead.lower()]
        assert named, f"{card.key}: 'instead' names no method of the catalogue"
    # ESFT trains a mixture-of-experts model; the other two are never offered for training
    assert [c.key for c in cards.CARDS if c.key in METHODS] == ["esft"]


def test_esft_card_says_the_model_is_dense_and_is_hidden_for_a_mixture_of_experts(studio, tiny_model_dir, tmp_path):
    from transformers import MixtralConfig

    text = ms.elsewhere(studio, str(tiny_model_dir))
    assert f"'{tiny_model_dir}' is a dense model (no experts in its configuration)" in text
    assert "Use instead:* Freeze tuning" in text

    moe = MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2, vocab_size=100)
    assert cards.experts(moe) == 4
    # a mixture-of-experts model: ESFT is a method in the table, no card says it cannot train
    assert [c.key for c in cards.shown(cards.experts(moe))] == ["hypertuning", "quiet_star"]
    assert "ESFT" not in cards.as_markdown("'tiny-moe'", 4)

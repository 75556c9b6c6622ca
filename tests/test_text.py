"""Text: normalisation, tokens, hashtag segmentation, post and product texts, shared words."""

from __future__ import annotations

import pytest

from consumer.text import (
    FILLER_WORDS,
    HashtagSegmenter,
    handles,
    hashtags_in,
    lexical_tokens,
    mentions_in,
    normalize,
    post_text,
    product_text,
    segment_hashtag,
    shared_words,
    words,
)


@pytest.fixture(scope="module")
def segmenter() -> HashtagSegmenter:
    return HashtagSegmenter(["kinetiq", "glowora", "tressé", "ab", "x9"])


def test_normalize_folds_width_case_and_control_characters() -> None:
    assert normalize("ＳＥＲＵＭ\u200b\x07 Ok") == "serum ok"  # fullwidth, zero-width, bell
    assert normalize("line\nnext\ttab") == "line\nnext\ttab"


def test_words_drop_emoji_and_punctuation_keep_accents_and_apostrophes() -> None:
    assert words("Crème Brûlée ✨ “Dewy” don’t!! 10% snake_case") == [
        "crème", "brûlée", "dewy", "don’t", "10", "snake", "case"]


def test_lexical_tokens_stem_and_drop_stopwords() -> None:
    assert lexical_tokens("The running shoes are for runners, a 5 k") == ["run", "shoe", "runner"]


def test_hashtags_mentions_and_handles() -> None:
    caption = "Love @Glowora.Official. and @kinetiq_active #SummerGlowUp #ootd🔥"
    assert hashtags_in(caption) == ["summerglowup", "ootd"]
    assert mentions_in(caption) == ["glowora.official", "kinetiq_active"]
    assert handles(["#Tresse", "skincare"], caption) == {
        "tresse", "skincare", "summerglowup", "ootd", "gloworaofficial", "kinetiq_active"}


def test_plain_segmentation_splits_english_run_together_tags() -> None:
    assert segment_hashtag("summerglowup") == ("summer", "glow", "up")
    assert segment_hashtag("#WeddingSeason") == ("wedding", "season")
    assert segment_hashtag("") == () and segment_hashtag("#") == ()


def test_catalog_vocabulary_wins_where_it_fits(segmenter: HashtagSegmenter) -> None:
    # The plain English model cuts the invented brand into junk; the catalog's word fixes it.
    assert "kinetiq" not in segment_hashtag("kinetiqactive")
    assert segmenter.segment("kinetiqactive") == ("kinetiq", "active")
    assert segmenter.segment("gloworaskincare") == ("glowora", "skincare")
    # Short or non-alphabetic vocabulary is not boosted (it would shred ordinary words).
    assert segmenter.segment("abroad") == ("abroad",)


def test_post_text_joins_caption_segmented_tags_and_interests(segmenter: HashtagSegmenter) -> None:
    text = post_text("Summer glow with @kinetiqactive ✨ #summerglowup",
                     ["#gymwear", "summerglowup"], ["Workout ", "skincare"], segmenter.segment)
    caption, tags, interests = text.split(" . ")
    assert caption == "summer glow with kinetiq active ✨ summer glow up"
    assert tags == "gym wear summer glow up"  # hashtags once each, sorted, segmented
    assert interests == "workout skincare"


def test_post_text_without_caption_or_interests() -> None:
    assert post_text("", ["summerglowup"], []) == "summer glow up"
    assert post_text("   ", [], ["skincare"]) == "skincare"


def test_product_text_drops_filler_repeats_and_name_words() -> None:
    text = product_text(
        "Vitamin C Glow Serum",
        ["trendy", "serum", "Dark Spots", "dark  spots", "the", "vitamin c", "glowora", "beauty",
         "brightening", "long", "natural", "STYLISH"],
        brand="Glowora",
        categories=["Beauty", "Skincare"],
    )
    assert text == "glowora vitamin c glow serum | beauty skincare | dark spots, brightening"
    assert {"trendy", "the", "long", "natural", "stylish"} <= FILLER_WORDS


def test_product_text_caps_keywords_and_handles_missing_parts() -> None:
    text = product_text("Tote", [f"kw{i}" for i in range(40)], max_keywords=3)
    assert text == "tote | kw0, kw1, kw2"
    assert product_text("Tote", []) == "tote"


def test_shared_words_match_after_stemming_as_written() -> None:
    post_terms, product_terms = shared_words("Glowing skin with serums and trendy tops",
                                             "Vitamin C Glow Serum | trendy")
    assert post_terms == ["glowing", "serums"]
    assert product_terms == ["glow", "serum"]  # "trendy" is filler, "with" a stopword
    assert shared_words("sneakers", "kurta set") == ([], [])
    many = shared_words("a b c dd ee ff gg hh ii", "dd ee ff gg hh ii", limit=2)
    assert many == (["dd", "ee"], ["dd", "ee"])

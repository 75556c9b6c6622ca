"""Text the models read: post and product texts, tokens for lexical matching, hashtag words."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import Stemmer

# Words that appear on thousands of HYPD products ("trendy" on 5,766 of 7,957) and so
# carry no signal about which product a post shows; they only dilute product texts.
FILLER_WORDS: frozenset[str] = frozenset(
    """
    trendy quirky stylish school college party office meeting meetings shaadi trip travel
    function gloss glossy long lasting outdoor event casual casusal semi formal type
    formulation features feature natural ingredients suitable product products benefit
    benefits the and for with of a an in on to by or from new best all
    """.split()
)

STOPWORDS: frozenset[str] = frozenset(
    """
    a an and are as at be but by for from has have i if in into is it its me my of on or
    our so that the their them they this to was we were what when which who will with you
    your yours just get got its it's im i'm dont don't can all more very too out up
    """.split()
)

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)
_HASHTAG = re.compile(r"#([^\W]+)", re.UNICODE)
_MENTION = re.compile(r"@([\w.]+)", re.UNICODE)
_STEMMER = Stemmer.Stemmer("english")


def normalize(text: str) -> str:
    """NFKC, lower case, no control characters: one form for every reader and model."""
    text = unicodedata.normalize("NFKC", text)
    if not text.isprintable():  # the rare text with control characters: filter per character
        text = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t")
    return text.lower()


def words(text: str) -> list[str]:
    """Word tokens of a text, lower-cased, emoji and punctuation dropped."""
    return _TOKEN.findall(normalize(text))


def stem(tokens: Iterable[str]) -> list[str]:
    return list(_STEMMER.stemWords(list(tokens)))


def lexical_tokens(text: str) -> list[str]:
    """Stemmed content words: what BM25 and the explanation of a match compare."""
    return stem(w for w in words(text) if w not in STOPWORDS and len(w) > 1)


@lru_cache(maxsize=1)
def _english_model() -> Any:
    import wordsegment

    model = wordsegment.Segmenter()
    model.load()
    return model


class HashtagSegmenter:
    """Splits run-together hashtags into words: ``summerglowup`` → ``summer glow up``.

    A general English unigram model cuts brand handles into junk (``kicaactive`` →
    ``kic a active``), so words from the catalog (brand and product names) are added with
    a high count: the catalog's own vocabulary wins where it fits.
    """

    def __init__(self, vocabulary: Iterable[str] = ()) -> None:
        import wordsegment

        base = _english_model()
        self._segmenter = wordsegment.Segmenter()
        # Read the English model once per process (~0.5 s); only the unigrams are changed here.
        self._segmenter.unigrams = dict(base.unigrams)
        self._segmenter.bigrams = base.bigrams
        self._segmenter.total, self._segmenter.limit = base.total, base.limit
        self._segmenter.words = base.words
        self._boost = max(self._segmenter.unigrams.values()) / 1000
        self.segment = lru_cache(maxsize=65536)(self._segment)
        self.add(vocabulary)

    def add(self, vocabulary: Iterable[str]) -> None:
        """Learn more catalog words (new products' names); earlier answers are forgotten."""
        unigrams = self._segmenter.unigrams
        for word in vocabulary:
            if len(word) > 2 and word.isalpha() and unigrams.get(word, 0) < self._boost:
                unigrams[word] = self._boost
        self.segment.cache_clear()

    def _segment(self, tag: str) -> tuple[str, ...]:
        tag = normalize(tag).lstrip("#")
        if not tag:
            return ()
        parts = tuple(p for p in self._segmenter.segment(tag) if p)
        return parts or (tag,)


@lru_cache(maxsize=1)
def default_segmenter() -> HashtagSegmenter:
    return HashtagSegmenter()


def segment_hashtag(tag: str) -> tuple[str, ...]:
    """Segment with the plain English model (no catalog vocabulary)."""
    return default_segmenter().segment(tag)


def hashtags_in(text: str) -> list[str]:
    return [normalize(t) for t in _HASHTAG.findall(text)]


def mentions_in(text: str) -> list[str]:
    return [normalize(m).strip(".") for m in _MENTION.findall(text)]


def handles(hashtags: Sequence[str], caption: str) -> set[str]:
    """Hashtags and @mentions as whole lower-case handles (brand handles live here)."""
    found = {normalize(h).lstrip("#") for h in hashtags}
    found.update(hashtags_in(caption))
    found.update(re.sub(r"[^\w]", "", m) for m in mentions_in(caption))
    return {h for h in found if h}


def post_text(
    caption: str,
    hashtags: Sequence[str],
    interests: Sequence[str],
    segment: Callable[[str], tuple[str, ...]] = segment_hashtag,
) -> str:
    """The text a post is encoded and matched by: caption, segmented hashtags, interests."""
    tags = {normalize(h).lstrip("#") for h in hashtags} | set(hashtags_in(caption))
    segmented = " ".join(" ".join(segment(t)) for t in sorted(tags) if t)
    caption_clean = _MENTION.sub(lambda m: " ".join(segment(m.group(1))), caption)
    caption_clean = _HASHTAG.sub(lambda m: " ".join(segment(m.group(1))), caption_clean)
    parts = [" ".join(caption_clean.split()), segmented, " ".join(i.strip() for i in interests)]
    return normalize(" . ".join(p for p in parts if p.strip()))


def product_text(
    name: str,
    keywords: Sequence[str],
    brand: str | None = None,
    categories: Sequence[str] = (),
    max_keywords: int = 24,
) -> str:
    """Name, brand, categories and the distinctive keywords, each once, in catalog order."""
    seen: set[str] = set(words(name)) | set(words(brand or ""))
    seen.update(w for c in categories for w in words(c))
    kept: list[str] = []
    for keyword in keywords:
        kw = " ".join(words(keyword))
        if not kw or kw in FILLER_WORDS or kw in seen or all(w in seen for w in kw.split()):
            continue
        seen.add(kw)
        kept.append(kw)
        if len(kept) >= max_keywords:
            break
    head = " ".join(p for p in (brand, name) if p)
    cats = " ".join(c for c in categories if c)
    return normalize(" | ".join(p for p in (head, cats, ", ".join(kept)) if p))


@lru_cache(maxsize=4096)
def stems_by_word(text: str) -> Mapping[str, str]:
    """A post's content words by stem (the first spelling of each): explanations compare a
    post with ten products, so it is computed once per post, not once per product. Cached,
    hence read-only to callers."""
    kept = [w for w in words(text) if w not in STOPWORDS and w not in FILLER_WORDS and len(w) > 1]
    by_stem: dict[str, str] = {}
    for key, word in zip(stem(kept), kept, strict=True):
        by_stem.setdefault(key, word)
    return by_stem


def shared_words(post: str, product: str, limit: int = 6) -> tuple[list[str], list[str]]:
    """Words of the post and of the product that match after stemming, as written."""
    post_by_stem = stems_by_word(post)
    post_terms: list[str] = []
    product_terms: list[str] = []
    product_words = words(product)
    for word, key in zip(product_words, stem(product_words), strict=True):
        if key in post_by_stem and post_by_stem[key] not in post_terms:
            post_terms.append(post_by_stem[key])
            product_terms.append(word)
            if len(post_terms) >= limit:
                break
    return post_terms, product_terms

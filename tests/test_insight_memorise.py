"""The memorisation meter: a sample that copies a known span of a synthetic training text has exactly
that span as its longest copy; fresh characters are 100% novel; the suffix array is sorted; and the
fast search equals the slow obvious one (every corpus position tried) on random small cases."""

import random
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlab.insight.memorise import build_index, load_index, matching_lengths, memorisation, save_index


def naive_lengths(corpus, query, depth):
    """For each i, the longest prefix of query[i:] that starts at some corpus position: O(n·m·L)."""
    out = []
    for i in range(len(query)):
        best = 0
        for j in range(len(corpus)):
            k = 0
            while k < depth and i + k < len(query) and j + k < len(corpus) and query[i + k] == corpus[j + k]:
                k += 1
            best = max(best, k)
        out.append(best)
    return out


def ids(text):
    return [ord(c) for c in text]


def test_a_copied_30_character_span_is_found_exactly():
    rng = random.Random(0)
    corpus = "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(5000))
    span = corpus[1234:1264]
    # Fresh characters (digits never occur in the corpus) around the copy, so it cannot extend.
    sample = "0123456789" + span + "9876543210"
    result = memorisation(build_index(ids(corpus)), ids(sample))
    assert result.longest.start == 10 and result.longest.length == 30
    assert corpus[result.longest.source:result.longest.source + 30] == span
    assert result.tokens == len(sample) and result.ngrams == len(sample) - 7
    assert result.novel == result.ngrams - (30 - 7)  # only the 23 8-grams inside the copy are seen
    assert not result.capped


def test_fresh_characters_are_all_novel():
    result = memorisation(build_index(ids("abcabcabc the cat sat")), ids("0123456789!?0123"))
    assert result.novel_share == 1.0 and result.longest.length == 0


def test_a_sample_shorter_than_n_has_no_share_and_an_empty_sample_no_copy():
    index = build_index(ids("hello world"))
    assert memorisation(index, ids("hello")).novel_share is None
    empty = memorisation(index, [])
    assert empty.tokens == 0 and empty.longest.length == 0 and empty.novel_share is None


def test_unknown_ids_never_match_and_long_copies_are_capped_at_the_depth():
    corpus = ids("to be or not to be, that is the question")
    index = build_index(corpus, depth=8)
    lengths, _ = matching_lengths(index, [-1] + corpus[:20])
    assert lengths[0] == 0 and lengths[1] == 8
    assert memorisation(index, corpus[:20]).capped


@pytest.mark.parametrize("fast", [True, False], ids=["libdivsufsort", "numpy prefix doubling"])
def test_the_suffix_array_is_sorted_up_to_its_depth(fast):
    rng = np.random.default_rng(1)
    tokens = np.tile(rng.integers(0, 4, 300), 3)  # repeats: long ties to refine
    for depth in (1, 5, 64, 2000):
        index = build_index(tokens, depth=depth, fast=fast)
        assert sorted(index.suffixes.tolist()) == list(range(tokens.size))
        prefixes = [tuple(tokens[s:s + depth]) for s in index.suffixes]
        assert prefixes == sorted(prefixes)


@settings(max_examples=60, deadline=None)
@given(corpus=st.lists(st.integers(0, 3), min_size=0, max_size=60), query=st.lists(st.integers(0, 4), max_size=25),
       depth=st.integers(1, 12), fast=st.booleans())
def test_the_fast_search_equals_the_naive_one(corpus, query, depth, fast):
    index = build_index(corpus, depth=depth, fast=fast)
    lengths, sources = matching_lengths(index, query)
    assert lengths.tolist() == naive_lengths(corpus, query, depth)
    for i, (k, s) in enumerate(zip(lengths, sources)):  # each reported source really holds the match
        assert corpus[s:s + k] == query[i:i + k]
    if len(query) >= 3 and depth >= 3:
        result = memorisation(index, query, n=3)
        naive = naive_lengths(corpus, query, 3)
        assert result.novel == sum(k < 3 for k in naive[:len(query) - 2])
        assert result.longest.length == max(naive_lengths(corpus, query, depth))


def test_an_index_saves_and_loads_as_plain_arrays(tmp_path):
    index = build_index(ids("the quick brown fox"), key="abc")
    save_index(index, tmp_path / "index.npz")
    loaded = load_index(tmp_path / "index.npz")
    assert loaded.key == "abc" and loaded.depth == index.depth
    assert np.array_equal(loaded.tokens, index.tokens) and np.array_equal(loaded.suffixes, index.suffixes)
    assert [p.name for p in tmp_path.iterdir()] == ["index.npz"]


def test_n_must_fit_the_index():
    with pytest.raises(ValueError, match="depth"):
        memorisation(build_index([1, 2, 3], depth=4), [1, 2, 3], n=8)

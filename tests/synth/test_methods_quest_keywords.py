"""Quest stage 2: RAKE scoring (hand-computed), threshold, blacklist, keyword choice, segments."""

import numpy as np
import pytest

from longjax.synth.methods.quest import keywords as qkw
from longjax.synth.methods.quest import rake
from longjax.synth.methods.quest.predict import ExtractiveQueryPredictor, describe_predictor, \
  make_predictor, segment, select_segments


def test_bundled_stopwords_are_nltk_english():
  words = rake.stopwords()
  assert len(words) == 179
  assert {"the", "of", "what", "is", "how", "don't", "wouldn't", "ma"} <= words
  assert "rice" not in words
  assert len(rake.stopwords_sha256()) == 64


@pytest.mark.parametrize("query,phrase,score", [
  ("rice", "rice", 1.0),                                  # 1 word: 1
  ("rice cooker", "rice cooker", 4.0),                    # 2 distinct words once: 2**2
  ("electric rice cooker", "electric rice cooker", 9.0),  # 3 words: 3**2
  # rice: freq 2, deg 4+4=8 -> 4; cook 4, cooker 4: 4 + 4 + 4 + 4.
  ("cook rice cooker rice", "cook rice cooker rice", 16.0),
])
def test_rake_hand_computed_scores(query, phrase, score):
  assert rake.score_phrases(query)[phrase] == score


def test_repeated_words_lower_the_score():
  # "rice cooker" and "rice": rice freq 2, deg 2+1 = 3 -> 1.5; cooker 2/1 -> 2. Total 3.5 < 4.
  scores = rake.score_phrases("rice cooker and rice")
  assert scores == {"rice cooker": 3.5, "rice": 1.5}
  # A phrase repeated twice: freq 2, deg 4 for each word -> 2 + 2 = 4, as once.
  assert rake.score_phrases("rice cooker or rice cooker")["rice cooker"] == 4.0


def test_tokenization_breaks_on_stopwords_and_punctuation():
  assert rake.candidate_phrases("What is the best way to cook rice? Use a rice-cooker!") == [
    ("best", "way"), ("cook", "rice"), ("use",), ("rice",), ("cooker",)]
  # Sentence split, lowercasing, wordpunct tokens ("3.5" is 3 . 5; "it's" is it ' s).
  assert rake.tokenize("It's 3.5 km. Next ONE") == [["it", "'", "s", "3", ".", "5", "km", "."],
                                                     ["next", "one"]]


def test_threshold_keeps_only_multiword_phrases():
  assert rake.keywords("how long to boil eggs") == ["boil eggs"]  # "long" scores 1
  assert rake.keywords("what is photosynthesis") == []
  assert rake.keywords("Solar  Panel EFFICIENCY") == ["solar panel efficiency"]
  assert rake.normalize("  Best \t Way ") == "best way"


def test_doc_candidates_score_each_query_alone():
  # Across the two queries "rice" would be repeated; per query both phrases score 4.
  assert qkw.doc_candidates(["rice cooker price", "", "cheap rice cooker", "what is it"]) == [
    "cheap rice cooker", "rice cooker price"]


def test_blacklist_seed_file_and_auto_top_n(tmp_path):
  seed = qkw.load_blacklist()
  assert {"following sentence", "best way"} <= seed
  custom = tmp_path / "bl.txt"
  custom.write_text("# comment\nRice  Cooker  # trailing comment\n\n")
  assert qkw.load_blacklist(custom) == {"rice cooker"}
  with pytest.raises(FileNotFoundError, match="blacklist"):
    qkw.load_blacklist(tmp_path / "missing.txt")
  cands = [["best way", "solar panel"], ["solar panel", "wind farm"], ["solar panel"],
           ["best way"], []]
  out = qkw.assign_keywords([0, 1, 2, 3, 4], cands, seed=0, blacklist=seed, auto_top_n=1,
                            queries=[["q"], ["q"], ["q"], ["q"], [""]])
  assert out.auto_blacklist == ["solar panel"]
  assert out.keywords == [None, "wind farm", None, None, None]
  assert out.reasons == [None if k else r for k, r in zip(out.keywords, out.reasons)]
  assert out.reasons[0] == out.reasons[2] == out.reasons[3] == "all_blacklisted"
  assert out.reasons[4] == "no_queries"
  assert out.df_top[0] == ("solar panel", 3)
  assert out.reason_counts() == {"all_blacklisted": 3, "no_queries": 1}


def test_keyword_choice_is_uniform_and_keyed_by_seed_and_doc():
  cands = ["a b", "c d", "e f", "g h"]
  picks = [qkw.choose(cands, seed=1, doc_id=d) for d in range(4000)]
  counts = np.array([picks.count(c) for c in cands])
  assert np.all(np.abs(counts / 4000 - 0.25) < 0.03)
  assert qkw.choose(cands, seed=1, doc_id=17) == qkw.choose(cands, seed=1, doc_id=17)
  assert [qkw.choose(cands, seed=2, doc_id=d) for d in range(50)] != picks[:50]
  # 64-bit ids differing only in the high half are keyed differently.
  hi = [qkw.choose(cands, seed=1, doc_id=d + (1 << 40)) for d in range(50)]
  assert hi != picks[:50]


def test_segments_evenly_spaced():
  assert select_segments(3, 8) == [0, 1, 2]
  assert select_segments(15, 8) == [0, 2, 4, 6, 8, 10, 12, 14]
  assert select_segments(9, 8) == [0, 1, 2, 3, 5, 6, 7, 8]
  assert select_segments(5, 1) == [0]
  windows = segment(list(range(10)), 4, 8)
  assert windows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
  assert segment([], 4, 8) == [[]]


def test_extractive_predictor_and_no_silent_fallback():
  pred = ExtractiveQueryPredictor(window_words=6, max_segments_per_doc=8)
  out = pred.predict([(0, "Solar panels convert sunlight. The wind farm was big"), (1, "the of")],
                     seed=0)
  # Windows of 6 words; phrases ranked by score, then alphabetically, top 3 joined by ", ".
  assert out[0] == ["solar panels convert sunlight, wind", "big, farm"]
  assert out[1] == [""]
  assert pred.describe()["kind"] == "extractive"
  assert describe_predictor("extractive", window_words=6, max_segments_per_doc=8) \
      == pred.describe()
  for make in (make_predictor, describe_predictor):
    with pytest.raises(ValueError, match="checkpoint"):
      make("t5")
    with pytest.raises(ValueError, match="one of"):
      make("bm25")


def _reference_choice(candidates, blacklist, min_df, seed):
  """The min_keyword_df rule written out directly: (keyword or None, fell back) per document."""
  kept = [sorted(set(c) - blacklist) for c in candidates]
  df = {}
  for cands in kept:
    for c in cands:
      df[c] = df.get(c, 0) + 1
  out = []
  for doc_id, cands in enumerate(kept):
    common = [c for c in cands if df[c] >= min_df]
    pool = common or cands
    out.append((qkw.choose(pool, seed=seed, doc_id=doc_id) if pool else None,
                bool(cands) and not common))
  return out


def test_min_keyword_df_hand_built():
  # df: "solar panel" 3, "wind farm" 2, every "rare *" 1; "best way" is seed-blacklisted.
  cands = [["rare a", "solar panel"], ["rare b", "solar panel", "wind farm"],
           ["solar panel", "wind farm"], ["rare c", "rare d"], [], ["best way", "rare e"]]
  bl = qkw.load_blacklist()
  out = qkw.assign_keywords(range(6), cands, seed=5, blacklist=bl, min_df=3)
  assert out.keywords[:3] == ["solar panel"] * 3  # the only keyword with df >= 3
  assert out.keywords[3] == qkw.choose(["rare c", "rare d"], seed=5, doc_id=3)  # fallback
  assert out.keywords[4] is None and out.keywords[5] == "rare e"
  assert out.df_fallback == [False, False, False, True, False, True]
  two = qkw.assign_keywords(range(6), cands, seed=5, blacklist=bl, min_df=2)
  assert two.keywords[1] == qkw.choose(["solar panel", "wind farm"], seed=5, doc_id=1)
  assert two.keywords[0] == "solar panel" and sum(two.df_fallback) == 2
  assert out.df_histogram == {"df>=1": 7, "df>=2": 2, "df>=5": 0, "df>=10": 0, "df>=20": 0}
  with pytest.raises(ValueError, match="min_keyword_df"):
    qkw.assign_keywords([0], [["a b"]], seed=0, blacklist=bl, min_df=0)


def test_min_keyword_df_matches_reference_and_default_is_unchanged():
  rng = np.random.default_rng(0)
  vocab = [f"topic {i}" for i in range(60)] + ["best way"]
  p = 1.0 / np.arange(1, len(vocab) + 1)  # Zipf-like: a few common keywords, a long tail
  cands = [sorted(set(rng.choice(vocab, size=rng.integers(0, 6), p=p / p.sum())))
           for _ in range(400)]
  bl = qkw.load_blacklist()
  for min_df in (1, 2, 5, 20, 1000):
    out = qkw.assign_keywords(range(400), cands, seed=7, blacklist=bl, min_df=min_df)
    want = _reference_choice(cands, bl, min_df, seed=7)
    assert out.keywords == [k for k, _ in want]
    assert out.df_fallback == [f for _, f in want]
    df = dict(out.df_top)
    for k, cs in zip(out.keywords, cands):
      if any(df.get(c, 0) >= min_df for c in cs if c not in bl):
        assert df[k] >= min_df
  # min_df=1 (the default) is the paper's rule: uniform over all survivors, no fallback.
  default = qkw.assign_keywords(range(400), cands, seed=7, blacklist=bl)
  assert default.keywords == [qkw.choose(sorted(set(c) - bl), seed=7, doc_id=d)
                              if set(c) - bl else None for d, c in enumerate(cands)]
  assert not any(default.df_fallback)
  assert sum(out.df_fallback) > 0  # min_df=1000: every document with a keyword fell back
  # Deterministic, and independent of corpus order (choice keyed by (seed, doc_id)).
  order = rng.permutation(400)
  shuffled = qkw.assign_keywords(order, [cands[i] for i in order], seed=7, blacklist=bl,
                                 min_df=5)
  five = qkw.assign_keywords(range(400), cands, seed=7, blacklist=bl, min_df=5)
  assert [five.keywords[i] for i in order] == shuffled.keywords


def test_extractive_short_phrases_hand_computed():
  text = ("Tony Blair met Gordon Brown. Tony Blair said the Gordon Brown plan works. "
          "Blair spoke.")
  pred = ExtractiveQueryPredictor(max_phrase_words=2, phrases_per_query=3)
  # Runs break at stopwords and at "said" (NON_QUERY_WORDS). Two-word runs: "tony blair" and
  # "gordon brown" occur twice; "tony blair" has the more frequent words (tony 2, blair 3:
  # mean 2.5 vs 2). Among the once-seen runs, "blair met" and "blair spoke" (mean 2) lead
  # "met gordon" and "brown plan" (1.5); ties go alphabetically.
  assert pred.predict([(0, text)], seed=0) == [["tony blair, gordon brown, blair met"]]
  everything = ExtractiveQueryPredictor(max_phrase_words=2, phrases_per_query=50)
  assert everything.predict([(0, text)], seed=0)[0][0] == (
    "tony blair, gordon brown, blair met, blair spoke, brown plan, met gordon, plan works")
  # Every phrase of the query survives RAKE's 3.0 threshold (each scores >= 4).
  assert qkw.doc_candidates(["tony blair, gordon brown, blair met"]) == [
    "blair met", "gordon brown", "tony blair"]
  three = ExtractiveQueryPredictor(max_phrase_words=3, phrases_per_query=4)
  assert three.predict([(0, text)], seed=0)[0][0].split(", ")[:2] == ["tony blair",
                                                                      "gordon brown"]
  assert pred.describe()["max_phrase_words"] == 2
  # The default keeps the earlier behaviour and description (saved query parts stay valid).
  assert "max_phrase_words" not in ExtractiveQueryPredictor().describe()
  with pytest.raises(ValueError, match="max_phrase_words"):
    ExtractiveQueryPredictor(max_phrase_words=1)

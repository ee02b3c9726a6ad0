"""Generated examples: reproducible from their seed, within their length budget in the model's
tokens, and with gold answers that an independent parse of the prompt confirms."""

import collections
import re

import pytest

from longjax.eval import suite
from longjax.eval.task import ExampleGenerator

LENGTHS = (1024, 4096)


@pytest.fixture(scope="module")
def tasks():
  return suite.make_tasks()


@pytest.fixture(scope="module")
def gen(smol_tokenizer):
  return ExampleGenerator(smol_tokenizer, seed=42)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", suite.ALL_TASKS)
def test_examples_fit_budget_and_reproduce(name, length, tasks, gen, smol_tokenizer):
  task = tasks[name]
  exs = gen.examples(task, length, 3)
  for ex in exs:
    ids = smol_tokenizer.encode(ex.prompt)  # SmolLM2's documents start with no token
    assert ex.num_tokens == len(ids) == len(gen.encode_prompt(ex))
    assert len(ids) + ex.max_new_tokens <= length
    # RULER's per-example shrink step (25 needle lines of ~80 tokens at 4K) may halve an
    # example that overflows; the searched count itself must use most of the budget.
    if ex.num_units == gen.units(task, length):
      assert len(ids) + ex.max_new_tokens > 0.6 * length, "fitting left most of the budget unused"
  # A fresh generator (empty caches) rebuilds example 2 from its seed alone.
  again = ExampleGenerator(smol_tokenizer, seed=42).example(task, length, 2)
  assert again == exs[2]
  assert len({e.seed for e in exs}) == 3 and exs[0].input != exs[1].input
  other = ExampleGenerator(smol_tokenizer, seed=7).example(task, length, 2)
  assert other.input != exs[2].input


_NEEDLE = re.compile(r"One of the special magic (\w+) for ([\w-]+) is: ([\w-]+)\.")


@pytest.mark.parametrize("name", [n for n in suite.ALL_TASKS if n.startswith("niah")])
def test_niah_gold_matches_parsed_needles(name, tasks, gen, smol_tokenizer):
  task = tasks[name]
  for ex in gen.examples(task, 4096, 3):
    needles = _NEEDLE.findall(ex.input)
    by_key = collections.defaultdict(list)
    for _, k, v in needles:
      by_key[k].append(v)
    question = ex.input.rsplit("\n", 1)[1]
    queried = [k for k in by_key if k in question]
    assert len(queried) == task.num_queries
    assert all(len(by_key[k]) == task.num_values for k in queried)  # no distractor reuses a key
    gold = sorted(v for k in queried for v in by_key[k])
    assert sorted(ex.outputs) == gold
    assert len(ex.needle_positions) == task.num_keys * task.num_values
    ids = gen.encode_prompt(ex)
    for pos in ex.needle_positions:  # the stored token position starts a real needle
      assert smol_tokenizer.decode(ids[pos:pos + 6]).strip().startswith("One of the special")
    singular = task.num_queries * task.num_values == 1
    assert ex.input.startswith("A special magic" if singular else "Some special magic")
    assert ex.answer_prefix.endswith(" is" if singular else " are")


def test_vt_gold_is_the_chain_of_the_queried_value(tasks, gen):
  ex = gen.example(tasks["vt"], 4096, 0)
  body = ex.input.split("\n\n", 2)[-1]  # after the 1-shot example
  value = re.search(r"assigned the value (\d+) in the text", body).group(1)
  assign = dict(re.findall(r"VAR (\w+) = (VAR \w+|\d+)", body))
  resolved = []
  for name in assign:
    v = assign[name]
    while v.startswith("VAR "):
      v = assign[v[4:]]
    if v == value:
      resolved.append(name)
  assert sorted(resolved) == sorted(ex.outputs) and len(resolved) == 5


def test_cwe_gold_are_the_ten_most_common(tasks, gen):
  ex = gen.example(tasks["cwe"], 4096, 1)
  listing = ex.input.rsplit("Memorize the ones that appear most often.\n", 1)[1]
  listing = listing.split("\nQuestion:")[0]
  counts = collections.Counter(re.findall(r"\d+\. (\S+(?: \S+)*?)(?= \d+\. |$)", listing))
  top = [w for w, c in counts.items() if c == 30]
  assert sorted(top) == sorted(ex.outputs) and len(top) == 10
  assert max(c for w, c in counts.items() if w not in top) == 3


def test_fwe_gold_are_ranks_two_to_four(tasks, gen):
  ex = gen.example(tasks["fwe"], 4096, 0)
  coded = ex.input.split("most frequently appeared coded words. ", 1)[1].split("\nQuestion")[0]
  ranked = [w for w, _ in collections.Counter(coded.split()).most_common()]
  assert ranked[0] == "..."
  assert list(ex.outputs) == ranked[1:4]


def test_json_kv_gold_is_the_value_of_the_key(tasks, gen):
  import json
  ex = gen.example(tasks["json_kv"], 4096, 0)
  obj = json.loads(ex.input.split("JSON data:\n", 1)[1].split("\n\nExtract", 1)[0])
  key = json.loads(ex.input.rsplit("Key: ", 1)[1])
  assert ex.outputs == (obj[key],) and len(obj) == ex.num_units


def test_unknown_task_names_the_known_ones():
  with pytest.raises(ValueError, match="unknown task 'niah_single_9'.*niah_single_1"):
    suite.expand_task_names("niah_single_9")
  assert suite.expand_task_names("recall,vt")[:2] == ["json_kv", "niah_multikey_2"]


def test_too_short_length_is_a_clear_error(tasks, gen):
  with pytest.raises(ValueError, match="do not fit"):
    gen.units(tasks["vt"], 256)


def test_icl_demos_balanced_disjoint_and_gold_follows_the_mapping(tasks, gen):
  from longjax.eval import icl
  from longjax.bundled_texts import reserved_bbc_ids
  test, pool = icl.bbc_items()
  assert len(test) == 100 and len(pool) == 200
  assert {i.key for i in test}.isdisjoint({i.key for i in pool})
  assert {i.key for i in test} | {i.key for i in pool} == set(reserved_bbc_ids())
  ex = gen.example(tasks["icl_bbc"], 4096, 3)
  body, question = ex.input.split("\n\n")[1:-1], ex.input.rsplit("\n\n", 1)[1]
  demos = [d.rsplit("\nlabel: ", 1) for d in body]
  assert len(demos) == ex.num_units
  headline_class = {i.headline: i.label for i in test + pool}
  classes = sorted({i.label for i in pool})
  mapping = icl.label_mapping(question, classes)
  assert sorted(mapping.values()) == ["0", "1", "2", "3", "4"]
  for text, label in demos:  # every demo carries the prompt's mapping of its true class
    assert mapping[headline_class[text]] == label
  counts = collections.Counter(headline_class[t] for t, _ in demos)
  assert max(counts.values()) - min(counts.values()) <= 1  # label-balanced
  assert ex.outputs == (mapping[headline_class[question]],)
  assert question in {i.headline for i in test}


def test_prepared_pieces_from_worker_processes_equal_the_in_process_ones(tasks, smol_tokenizer):
  """`prepare` builds pieces in spawned workers (with the text haystack and the fitted counts
  sent once), two per worker in flight: every example and encoded prompt equals what this
  process builds alone, in the order asked, and a piece never prepared is still built here."""
  pieces = [("niah_single_2", 1024), ("vt", 1024), ("fwe", 1024), ("cwe", 1024)]
  here = ExampleGenerator(smol_tokenizer, seed=42)
  there = ExampleGenerator(smol_tokenizer, seed=42)
  for name, length in pieces:
    there.units(tasks[name], length)
  there.prepare(tasks, pieces[:3], 4, workers=1)
  assert sorted(there._pending) == [("niah_single_2", 1024, 4), ("vt", 1024, 4)]
  assert there._queued == [("fwe", 1024, 4)]  # given to the worker once the first is taken
  try:
    for name, length in pieces:
      want = here.examples(tasks[name], length, 4)
      got = there.examples(tasks[name], length, 4)
      assert got == want
      assert [there.encode_prompt(e) for e in got] == [here.encode_prompt(e) for e in want]
      assert there.encode_prompt(got[1]) == [*smol_tokenizer.encode(want[1].prompt)]
  finally:
    there.close()
  assert not there._pending

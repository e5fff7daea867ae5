"""The language model behind ``describer: lm``: loaded once per process, shared by every source.

Each source's aggregator has its own describer (its own "what was said before"), but they
all call the one model a process loaded for the same folder, device and length: a service
with ten streams holds one copy of the weights, not ten.
"""

from __future__ import annotations

import logging
import threading

from mmlm_stream.config.describer import DescriberConfig
from mmlm_stream.models.device import resolve_device
from mmlm_stream.operators.sentences import Generate

logger = logging.getLogger(__name__)

_LOADED: dict[tuple[str, str, int], Generate] = {}
_LOCK = threading.Lock()


def load_generator(config: DescriberConfig) -> Generate:
    """This process's generator for ``config`` (loaded on the first call)."""
    key = (str(config.lm_path), config.lm_device, config.lm_max_new_tokens)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(config)
        return _LOADED[key]


def _load(config: DescriberConfig) -> Generate:
    path = config.lm_path
    if path is None:
        raise ValueError("describer.lm_path is not set")
    if not path.is_dir():
        raise FileNotFoundError(f"describer.lm_path {path} is not a model folder")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(config.lm_device)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    chat = bool(getattr(tokenizer, "chat_template", None))
    logger.info("describer: language model %s on %s", path, device)

    def generate(prompt: str) -> str:
        text = prompt
        if chat:
            messages = [{"modality": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        encoded = tokenizer(text, return_tensors="pt")
        ids = encoded["input_ids"].to(device)
        mask = encoded["attention_mask"].to(device)
        with torch.inference_mode():
            output = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=config.lm_max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad,
            )
        return str(tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True))

    return generate

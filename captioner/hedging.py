"""Wording a caption by the model's own confidence, so that listeners do not over-trust it.

MacLeod et al. (CHI 2017) found that blind users trusted wrong captions when
they were stated flatly, and less so when the wording admitted doubt.
The thresholds are chosen on the dev split and stored in ``config.json``.
"""
from __future__ import annotations

from .config import ModelConfig
from .decoding import Caption


def confidence_band(caption: Caption, config: ModelConfig) -> str:
    """"probably", "possibly" or "not sure", from the per-word log-probability."""
    if caption.mean_log_prob >= config.hedge_sure:
        return "probably"
    if caption.mean_log_prob >= config.hedge_possible:
        return "possibly"
    return "not sure"


def hedge(caption: Caption, config: ModelConfig) -> str:
    text = caption.text
    band = confidence_band(caption, config)
    if band == "probably":
        return f"Probably {text}."
    if band == "possibly":
        return f"Possibly {text}."
    return f"I'm not sure; it may be {text}."
